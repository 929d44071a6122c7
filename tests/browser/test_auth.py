"""API keys in a real browser: a wrong key is refused in words, the right one gets in."""

import pytest
from playwright.sync_api import Page, expect

from tests.browser._ui import by_testid, open_chat, send
from tests.browser.conftest import API_KEY, API_USER, Server

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def test_wrong_api_key_is_refused_then_the_right_one_works(
    page: Page, keyed_server: Server
) -> None:
    page.goto(keyed_server.base_url)
    form = page.locator(by_testid("api-key-form"))
    expect(form).to_be_visible()
    expect(page.locator(by_testid("agent-picker"))).to_have_count(0)

    page.locator(by_testid("api-key-input")).fill("wrong")
    page.locator(by_testid("api-key-submit")).click()
    expect(page.locator(by_testid("api-key-error"))).to_contain_text("Invalid API key")
    expect(form).to_be_visible()

    page.locator(by_testid("api-key-input")).fill(API_KEY)
    page.locator(by_testid("api-key-submit")).click()
    expect(form).to_have_count(0)
    picker = page.locator(by_testid("agent-picker"))
    expect(picker).to_be_visible()
    expect(picker.locator("option")).to_have_text(["chat", "tools", "broken", "records-clerk"])
    expect(page.locator(by_testid("forget-key"))).to_be_visible()


def test_runs_stream_and_stop_with_the_api_key(page: Page, keyed_server: Server) -> None:
    page.goto(keyed_server.base_url)
    page.locator(by_testid("api-key-input")).fill(API_KEY)
    page.locator(by_testid("api-key-submit")).click()
    open_chat(page, keyed_server, "tools")
    answer = send(page, "Look up the weather")
    card = answer.locator(by_testid("tool-card"))
    expect(card).to_have_attribute("data-status", "running")
    with page.expect_response("**/runs/*/cancel") as cancelled:
        page.locator(by_testid("stop-button")).click()
    assert cancelled.value.ok
    expect(card).to_have_attribute("data-status", "cancelled")
    expect(answer).to_have_attribute("data-status", "interrupted")
    run_id = answer.get_attribute("data-run-id")
    run = keyed_server.get(f"/runs/{run_id}").json()
    assert (run["status"], run["reason"]) == ("cancelled", "user")
    assert run["cancel"]["by"] == API_USER
