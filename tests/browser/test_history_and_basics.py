"""Issue #18 in the browser: a failure's reason survives a reload, titles, autofocus."""

import pytest
from playwright.sync_api import Page, expect

from tests.browser._ui import by_testid, open_chat, send
from tests.browser.conftest import Server

pytestmark = pytest.mark.browser


def test_the_message_input_has_focus_on_load(page: Page, server: Server) -> None:
    page.goto(server.base_url)
    expect(page.locator(by_testid("composer-input"))).to_be_focused()


def test_a_failure_says_why_and_still_does_after_a_reload(page: Page, server: Server) -> None:
    open_chat(page, server, "broken")
    answer = send(page, "Is anyone there?")
    expect(answer).to_contain_text("the model is unreachable")
    # The session is titled from its first message at once.
    expect(page.locator(by_testid("agent-description"))).to_contain_text("Is anyone there?")
    page.reload()
    expect(page.get_by_text("the model is unreachable")).to_be_visible()
