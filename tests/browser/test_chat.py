"""Chatting in a real browser: streaming, Stop mid-text and mid-tool, reload mid-run."""

import re
from typing import Final

import pytest
from playwright.sync_api import Page, Route, expect

from tests.browser._ui import (
    RUN_TIMEOUT_MS,
    by_testid,
    message_text,
    open_chat,
    send,
    session_of,
    stored_answer,
    wait_for_text,
)
from tests.browser.conftest import REPO_ROOT, Server
from tests.browser.server_app import chat_text, word

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

ARTIFACTS: Final = REPO_ROOT / "test-artifacts"
WORD_PATTERN: Final = re.compile(r"w\d{3}")


def assert_words_in_order(text: str) -> list[str]:
    """Check ``text`` is a prefix of the chat agent's answer (nothing missing, nothing doubled)."""
    words = WORD_PATTERN.findall(text)
    assert words == [word(i) for i in range(len(words))], text
    assert chat_text().startswith(text), text
    return words


def test_message_streams_to_completion(page: Page, server: Server) -> None:
    open_chat(page, server, "chat")
    answer = send(page, "Say many words")
    expect(page.locator(f'{by_testid("message")}[data-role="user"]')).to_have_text("Say many words")
    expect(answer).to_have_attribute("data-status", "streaming")
    expect(answer).to_have_attribute("data-status", "complete", timeout=RUN_TIMEOUT_MS)
    assert message_text(answer) == chat_text()
    assert stored_answer(server, session_of(server, answer)) == chat_text()
    expect(answer.locator(by_testid("run-outcome"))).to_have_count(0)
    expect(page.locator(by_testid("send-button"))).to_be_visible()


def test_stop_mid_text_keeps_the_partial_answer_and_says_why(page: Page, server: Server) -> None:
    # The stop request is held until "stopping…" has been seen: the indicator only lasts until
    # the server's run_finished, which can arrive before an assertion gets to look.
    held: list[Route] = []
    page.route("**/runs/*/cancel", lambda route: held.append(route))
    open_chat(page, server, "chat")
    answer = send(page, "Say many words")
    wait_for_text(answer, word(5))
    page.locator(by_testid("stop-button")).click()
    expect(answer.locator(by_testid("stopping-indicator"))).to_have_text("stopping…")
    expect(page.locator(by_testid("stop-button"))).to_be_disabled()
    assert len(held) == 1
    held[0].continue_()

    expect(answer).to_have_attribute("data-status", "interrupted")
    outcome = answer.locator(by_testid("run-outcome"))
    expect(outcome).to_have_text("Stopped by you")
    expect(outcome).to_have_attribute("data-reason", "user")
    expect(answer.locator(by_testid("stopping-indicator"))).to_have_count(0)
    partial = message_text(answer)
    words = assert_words_in_order(partial)
    assert 6 <= len(words) < len(chat_text().split())
    assert stored_answer(server, session_of(server, answer)) == partial
    expect(page.locator(by_testid("send-button"))).to_be_visible()


def test_stop_mid_tool_marks_the_tool_call_cancelled(page: Page, server: Server) -> None:
    open_chat(page, server, "tools")
    answer = send(page, "Look up the weather")
    card = answer.locator(by_testid("tool-card"))
    expect(card).to_have_attribute("data-status", "running")
    expect(card).to_have_attribute("data-tool", "slow_lookup")
    expect(card.locator(by_testid("tool-args"))).to_contain_text("weather")
    page.locator(by_testid("stop-button")).click()

    expect(card).to_have_attribute("data-status", "cancelled")
    expect(card.locator(by_testid("tool-status"))).to_have_text("cancelled")
    expect(answer).to_have_attribute("data-status", "interrupted")
    expect(answer.locator(by_testid("run-outcome"))).to_have_text("Stopped by you")
    assert message_text(answer) == "Let me look that up."
    session = server.get(f"/sessions/{session_of(server, answer)}").json()
    (stored_call,) = session["messages"][-1]["tool_calls"]
    assert stored_call["status"] == "cancelled"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "stopped-conversation.png"), full_page=True)


def test_reload_mid_run_resumes_without_duplicates_and_stop_still_works(
    page: Page, server: Server
) -> None:
    """The UI starts runs with ``on_disconnect=continue``: a reload resumes, never stops."""
    open_chat(page, server, "chat")
    answer = send(page, "Say many words")
    wait_for_text(answer, word(10))
    run_id = answer.get_attribute("data-run-id")
    page.reload()

    resumed = page.locator(f'{by_testid("message")}[data-run-id="{run_id}"]')
    expect(resumed).to_have_attribute("data-status", "streaming")
    wait_for_text(resumed, word(20))
    page.locator(by_testid("stop-button")).click()
    expect(resumed).to_have_attribute("data-status", "interrupted")
    expect(resumed.locator(by_testid("run-outcome"))).to_have_attribute("data-reason", "user")
    final = message_text(resumed)
    assert len(assert_words_in_order(final)) > 20
    assert final == stored_answer(server, session_of(server, resumed))


def test_escape_stops_the_run_and_the_session_takes_another_message(
    page: Page, server: Server
) -> None:
    open_chat(page, server, "chat")
    first = send(page, "Say many words")
    wait_for_text(first, word(3))
    page.locator(by_testid("composer-input")).press("Escape")
    expect(first).to_have_attribute("data-status", "interrupted")
    expect(first.locator(by_testid("run-outcome"))).to_have_attribute("data-reason", "user")

    second = send(page, "Go on")
    expect(second).to_have_attribute("data-status", "complete", timeout=RUN_TIMEOUT_MS)
    assert message_text(second) == chat_text()
    assert session_of(server, second) == session_of(server, first)
    expect(page.locator(f'{by_testid("message")}[data-role="user"]')).to_have_count(2)
