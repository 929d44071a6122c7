"""The ``Store`` contract for stops held before their run exists (issue #15), everywhere."""

import anyio
import pytest

from tests.contract.test_store import at
from tether.ids import UserId
from tether.records import CancelRequest
from tether.storage.store import Store

pytestmark = pytest.mark.anyio

ALICE = UserId("alice")
BOB = UserId("bob")


def stop(by: str, *, second: int = 0) -> CancelRequest:
    return CancelRequest(reason="user", by=by, requested_at=at(second))


async def test_a_held_stop_is_taken_once_by_its_own_user_only(store: Store) -> None:
    await store.hold_stop(ALICE, "req", stop("alice"), held_until=at(10))
    assert await store.take_held_stop(BOB, ["req"], now=at(1)) is None
    taken: list[CancelRequest | None] = []

    async def take() -> None:
        taken.append(await store.take_held_stop(ALICE, ["req", "ses"], now=at(1)))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(take)
    assert sorted(taken, key=lambda t: t is None) == [stop("alice"), None, None]


async def test_users_hold_apart_under_one_key_and_replace_only_their_own(store: Store) -> None:
    await store.hold_stop(ALICE, "req", stop("alice"), held_until=at(10))
    await store.hold_stop(BOB, "req", stop("bob"), held_until=at(10))
    await store.hold_stop(BOB, "req", stop("bob again", second=1), held_until=at(10))
    assert await store.take_held_stop(BOB, ["req"], now=at(2)) == stop("bob again", second=1)
    assert await store.take_held_stop(ALICE, ["req"], now=at(2)) == stop("alice")


async def test_an_expired_stop_is_not_taken(store: Store) -> None:
    await store.hold_stop(ALICE, "req", stop("alice"), held_until=at(10))
    assert await store.take_held_stop(ALICE, ["req"], now=at(11)) is None
