"""Issue #18 in the browser: the UI never loses what the user typed, and two tabs on one
session stay together."""

import pytest
from playwright.sync_api import Locator, Page, Route, expect

from tests.browser._ui import (
    RUN_TIMEOUT_MS,
    assistant_messages,
    by_testid,
    open_chat,
    send,
    session_of,
    wait_for_text,
)
from tests.browser.conftest import Server

pytestmark = pytest.mark.browser

RUNS = "**/agents/*/runs"
BUSY = "This chat is still answering. Stop it or wait for it to finish."


def user_messages(page: Page) -> Locator:
    return page.locator(f'{by_testid("message")}[data-role="user"]')


def test_a_message_sent_while_the_server_is_unreachable_comes_back_and_retry_sends_it(
    page: Page, server: Server
) -> None:
    open_chat(page, server, "chat")

    def unreachable(route: Route) -> None:
        route.abort("connectionrefused")

    page.route(RUNS, unreachable)
    composer = page.locator(by_testid("composer-input"))
    composer.fill("Please keep this")
    page.locator(by_testid("send-button")).click()

    expect(composer).to_have_value("Please keep this")
    expect(page.locator(by_testid("unsent-note"))).to_contain_text("can't reach the server")
    expect(page.get_by_role("alert")).to_contain_text("Not sent: can't reach the server.")
    expect(assistant_messages(page)).to_have_count(0)

    page.unroute(RUNS, unreachable)
    page.get_by_role("button", name="Retry").click()
    expect(composer).to_have_value("")
    expect(page.locator(by_testid("unsent-note"))).to_have_count(0)
    expect(user_messages(page)).to_have_text(["Please keep this"])
    answer = assistant_messages(page).last
    wait_for_text(answer, "w003")
    session_id = session_of(server, answer)
    stored = server.get(f"/sessions/{session_id}").json()["messages"]
    assert stored[0]["content"] == "Please keep this"
    page.locator(by_testid("stop-button")).click()
    expect(answer).to_have_attribute("data-status", "interrupted")


def open_session(page: Page, server: Server, session_id: str) -> None:
    """Load the UI in ``page`` and open ``session_id`` from the sidebar."""
    page.goto(server.base_url)
    item = page.locator(f'{by_testid("session-item")}[data-session-id="{session_id}"]')
    item.locator(by_testid("session-open")).click()
    expect(page.locator(by_testid("composer-input"))).to_be_enabled()


def first_session(page: Page, server: Server) -> str:
    """Start a session with one (stopped) run; returns its id."""
    open_chat(page, server, "chat")
    first = send(page, "One")
    wait_for_text(first, "w000")
    page.locator(by_testid("stop-button")).click()
    expect(first).to_have_attribute("data-status", "interrupted")
    return session_of(server, first)


def test_a_busy_session_refuses_a_second_message_in_words_and_keeps_it(
    page: Page, server: Server
) -> None:
    session_id = first_session(page, server)
    # A tab open on the session from before the next run, without the live feed to tell it.
    other = page.context.new_page()
    other.route(f"**/sessions/{session_id}/events", lambda route: route.abort())
    open_session(other, server, session_id)

    answer = send(page, "Two")
    wait_for_text(answer, "w001")
    composer = other.locator(by_testid("composer-input"))
    composer.fill("Me too")
    other.locator(by_testid("send-button")).click()

    expect(other.get_by_role("alert")).to_contain_text(BUSY)
    expect(composer).to_have_value("Me too")
    # It now shows the run that keeps the session busy, and follows it to its end.
    expect(user_messages(other)).to_have_text(["One", "Two"])
    wait_for_text(assistant_messages(other).last, "w00")
    page.locator(by_testid("stop-button")).click()
    expect(assistant_messages(other).last).to_have_attribute(
        "data-status", "interrupted", timeout=RUN_TIMEOUT_MS
    )
    expect(composer).to_have_value("Me too")
    other.close()


def test_a_stale_tab_follows_a_run_started_in_another_tab(page: Page, server: Server) -> None:
    """Needs the live session feed (``GET /sessions/{id}/events``)."""
    session_id = first_session(page, server)
    stale = page.context.new_page()
    open_session(stale, server, session_id)
    expect(assistant_messages(stale)).to_have_count(1)

    second = send(page, "Two")
    expect(user_messages(stale)).to_have_text(["One", "Two"])
    wait_for_text(assistant_messages(stale).last, "w002")
    page.locator(by_testid("stop-button")).click()
    expect(second).to_have_attribute("data-status", "interrupted")
    expect(assistant_messages(stale).last).to_have_attribute("data-status", "interrupted")
    stale.close()
