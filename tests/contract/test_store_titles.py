"""Who titled a session (issue #18): a hand rename is never replaced by a generated title."""

import pytest

from tether.ids import SessionId, UserId
from tether.records import SessionRecord
from tether.storage.store import Store

pytestmark = pytest.mark.anyio


async def new_session(store: Store) -> SessionId:
    session = SessionRecord(
        session_id=SessionId("ses_t"),
        user_id=UserId("u"),
        agent="a",
        title="first message",
        title_source="message",
    )
    await store.create_session(session)
    return session.session_id


async def test_a_generated_title_replaces_the_first_message_one(store: Store) -> None:
    session_id = await new_session(store)
    assert await store.set_generated_title(session_id, "Generated") is True
    session = await store.get_session(session_id)
    assert session is not None
    assert (session.title, session.title_source) == ("Generated", "generated")


async def test_a_hand_rename_wins_over_a_later_generated_title(store: Store) -> None:
    session_id = await new_session(store)
    await store.rename_session(session_id, "Mine")
    assert await store.set_generated_title(session_id, "Generated") is False
    session = await store.get_session(session_id)
    assert session is not None
    assert (session.title, session.title_source) == ("Mine", "user")


async def test_a_rename_replaces_a_generated_title_for_good(store: Store) -> None:
    session_id = await new_session(store)
    await store.set_generated_title(session_id, "Generated")
    await store.rename_session(session_id, "Mine")
    assert await store.set_generated_title(session_id, "Generated again") is False
    session = await store.get_session(session_id)
    assert session is not None
    assert session.title == "Mine"


async def test_a_generated_title_for_a_deleted_or_missing_session_is_dropped(store: Store) -> None:
    session_id = await new_session(store)
    await store.delete_session(session_id)
    assert await store.set_generated_title(session_id, "Generated") is False
    assert await store.set_generated_title(SessionId("ses_missing"), "Generated") is False
