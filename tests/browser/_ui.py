"""What the browser tests do on the chat page, by the UI's ``data-testid``s (web/README.md)."""

from typing import Final

from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import Server

RUN_TIMEOUT_MS: Final = 40_000


def by_testid(testid: str) -> str:
    return f'[data-testid="{testid}"]'


def open_chat(page: Page, server: Server, agent: str) -> None:
    """Load the UI and pick ``agent``, starting from an empty conversation."""
    page.goto(server.base_url)
    picker = page.locator(by_testid("agent-picker"))
    expect(picker).to_be_visible()
    picker.select_option(agent)
    expect(page.locator(by_testid("composer-input"))).to_be_enabled()


def send(page: Page, message: str) -> Locator:
    """Send ``message``; returns the assistant message that answers it."""
    before = assistant_messages(page).count()
    page.locator(by_testid("composer-input")).fill(message)
    page.locator(by_testid("send-button")).click()
    expect(assistant_messages(page)).to_have_count(before + 1)
    return assistant_messages(page).last


def assistant_messages(page: Page) -> Locator:
    return page.locator(f'{by_testid("message")}[data-role="assistant"]')


def wait_for_text(message: Locator, fragment: str) -> None:
    expect(message.locator(by_testid("message-text")).first).to_contain_text(fragment)


def message_text(message: Locator) -> str:
    """The text of ``message`` as the reader sees it (all its text parts, in order)."""
    parts = message.locator(by_testid("message-text")).all_inner_texts()
    return "".join(parts).strip()


def session_of(server: Server, message: Locator) -> str:
    """The session of the run that ``message`` shows, as the server knows it."""
    run_id = message.get_attribute("data-run-id")
    assert run_id, "the assistant message names no run"
    response = server.get(f"/runs/{run_id}")
    response.raise_for_status()
    session_id: str = response.json()["session_id"]
    return session_id


def stored_answer(server: Server, session_id: str) -> str:
    """The content of the last assistant message the server stored for the session."""
    response = server.get(f"/sessions/{session_id}")
    response.raise_for_status()
    messages = [m for m in response.json()["messages"] if m["role"] == "assistant"]
    assert messages, f"no assistant message stored in session {session_id}"
    content: str = messages[-1]["content"]
    return content.strip()
