"""The session list in a real browser: rename and delete."""

import pytest
from playwright.sync_api import Page, expect

from tests.browser._ui import by_testid, open_chat, send, session_of, wait_for_text
from tests.browser.conftest import Server
from tests.browser.server_app import word

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def test_rename_then_delete_a_session(page: Page, server: Server) -> None:
    open_chat(page, server, "chat")
    answer = send(page, "Say a few words")
    wait_for_text(answer, word(1))
    page.locator(by_testid("stop-button")).click()
    expect(answer).to_have_attribute("data-status", "interrupted")
    session_id = session_of(server, answer)
    item = page.locator(f'{by_testid("session-item")}[data-session-id="{session_id}"]')
    expect(item).to_be_visible()

    item.locator(by_testid("session-rename")).click()
    title_input = item.locator(by_testid("session-rename-input"))
    title_input.fill("Weekly words")
    title_input.press("Enter")
    expect(item.locator(by_testid("session-title"))).to_have_text("Weekly words")
    assert server.get(f"/sessions/{session_id}").json()["title"] == "Weekly words"

    item.locator(by_testid("session-delete")).click()
    expect(item).to_contain_text("Weekly words")
    item.locator(by_testid("session-delete-confirm")).click()
    expect(item).to_have_count(0)
    assert server.get(f"/sessions/{session_id}").status_code == 404
    page.reload()
    expect(page.locator(by_testid("agent-picker"))).to_be_visible()
    expect(item).to_have_count(0)
