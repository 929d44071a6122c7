"""Issue #18: every session was "Untitled session"; now it is named after its first message."""

import pytest

from tests.scripted import scripted, text
from tether import Tether
from tether.engine.titles import TITLE_CHARS, title_from

pytestmark = pytest.mark.anyio


def test_a_short_message_is_its_own_title() -> None:
    assert title_from("  What is\nthe capital   of France? ") == "What is the capital of France?"


def test_a_long_message_is_cut_at_a_word_boundary() -> None:
    title = title_from("Summarise " + "the archive of tide tables, " * 10)
    assert len(title) <= TITLE_CHARS + 1
    assert title.endswith("…")
    assert title.startswith("Summarise the archive of tide tables")
    assert " " not in title[-3:]  # never half a word before the ellipsis


async def test_a_new_session_is_titled_from_its_first_message_and_renaming_wins(
    app: Tether,
) -> None:
    model = scripted([text("Paris.")], [text("Lyon.")])
    app.agent("a")(lambda ctx: model.agent())
    first = await app.start("a", "What is the capital of France?")
    await first.outcome()
    session = await app.store.get_session(first.session_id)
    assert session is not None
    assert session.title == "What is the capital of France?"

    await app.store.rename_session(first.session_id, "Geography")
    second = await app.start("a", "And its second city?", session_id=first.session_id)
    await second.outcome()
    renamed = await app.store.get_session(first.session_id)
    assert renamed is not None
    assert renamed.title == "Geography"
