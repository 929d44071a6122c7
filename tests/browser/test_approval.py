"""Human in the loop (issue #9) in a real browser: approve, deny, edit, stop, reload while paused.

The ``records-clerk`` demo agent asks to delete the record its message names, pauses on
``delete_record`` until a person decides, then says "The tool answered: <result or denial>".
"""

import json

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser._ui import by_testid, message_text, open_chat, send, session_of
from tests.browser.conftest import Server

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

AGENT = "records-clerk"


def wait_paused(page: Page, answer: Locator, record_id: str) -> Locator:
    """Wait for ``answer``'s run to pause on deleting ``record_id``; returns the waiting card."""
    expect(answer).to_have_attribute("data-status", "paused")
    card = answer.locator(by_testid("tool-card"))
    expect(card).to_have_attribute("data-status", "awaiting_approval")
    expect(card).to_have_attribute("data-tool", "delete_record")
    expect(card.locator(by_testid("tool-status"))).to_have_text("awaiting approval")
    args = card.get_by_role("textbox", name="Arguments (JSON, you can edit them)")
    expect(args).to_have_value(json.dumps({"record_id": record_id}, indent=2))
    expect(page.locator(by_testid("approval-waiting"))).to_contain_text("Waiting for your approval")
    expect(page.locator(by_testid("stop-button"))).to_be_visible()
    return card


def stored_call(server: Server, answer: Locator) -> dict[str, object]:
    """The one tool call the server stored for the run ``answer`` shows."""
    run_id = answer.get_attribute("data-run-id")
    session = server.get(f"/sessions/{session_of(server, answer)}").json()
    (call,) = [c for m in session["messages"] if m["run_id"] == run_id for c in m["tool_calls"]]
    return dict(call)


def test_approve_runs_the_tool_and_the_answer_continues_in_the_same_message(
    page: Page, server: Server
) -> None:
    open_chat(page, server, AGENT)
    answer = send(page, "Please delete R-7")
    card = wait_paused(page, answer, "R-7")
    run_id = answer.get_attribute("data-run-id")
    expect(page.locator(by_testid("send-button"))).to_have_count(0)

    card.get_by_role("button", name="Approve delete_record").click()

    expect(answer).to_have_attribute("data-status", "complete")
    expect(answer).to_have_attribute("data-run-id", run_id or "")
    expect(card).to_have_attribute("data-status", "ok")
    expect(card.locator(by_testid("tool-result"))).to_have_text("record R-7 deleted")
    assert message_text(answer).endswith("The tool answered: record R-7 deleted")
    expect(page.locator(by_testid("approval-waiting"))).to_have_count(0)
    expect(page.locator(by_testid("send-button"))).to_be_visible()
    assert stored_call(server, answer)["status"] == "ok"


def test_deny_with_a_reason_tells_the_agent_why(page: Page, server: Server) -> None:
    open_chat(page, server, AGENT)
    answer = send(page, "Please delete R-8")
    card = wait_paused(page, answer, "R-8")

    reason = card.get_by_role("textbox", name="Reason, if you deny it (optional)")
    reason.fill("R-8 is still needed for the audit")
    # Enter in the reason field denies, as the Deny button does.
    reason.press("Enter")

    expect(card).to_have_attribute("data-status", "denied")
    expect(card.locator(by_testid("tool-status"))).to_have_text("denied")
    expect(card.locator(by_testid("tool-denial"))).to_contain_text(
        "R-8 is still needed for the audit"
    )
    expect(answer).to_have_attribute("data-status", "complete")
    assert "R-8 is still needed for the audit" in message_text(answer)
    assert "deleted" not in message_text(answer).split("The tool answered:")[-1]
    call = stored_call(server, answer)
    assert call["status"] == "denied"


def test_edited_arguments_run_the_tool_with_the_edit(page: Page, server: Server) -> None:
    open_chat(page, server, AGENT)
    answer = send(page, "Please delete R-1")
    card = wait_paused(page, answer, "R-1")
    args = card.locator(by_testid("approval-args"))
    approve = card.get_by_role("button", name="Approve delete_record")

    args.fill('{"record_id": ')
    expect(card.locator(by_testid("approval-args-error"))).to_contain_text("Not valid JSON")
    expect(args).to_have_attribute("aria-invalid", "true")
    expect(approve).to_be_disabled()

    args.fill('{"record_id": "R-42"}')
    expect(card.locator(by_testid("approval-args-error"))).to_have_count(0)
    # Keyboard only: focus the button and press Enter.
    approve.focus()
    page.keyboard.press("Enter")

    expect(card).to_have_attribute("data-status", "ok")
    expect(card.locator(by_testid("tool-result"))).to_have_text("record R-42 deleted")
    expect(card.locator(by_testid("tool-args"))).to_contain_text("R-42")
    expect(answer).to_have_attribute("data-status", "complete")
    assert message_text(answer).endswith("The tool answered: record R-42 deleted")
    assert stored_call(server, answer)["result"] == "record R-42 deleted"


def test_stop_while_paused_interrupts_the_run_and_the_next_message_works(
    page: Page, server: Server
) -> None:
    open_chat(page, server, AGENT)
    first = send(page, "Please delete R-2")
    card = wait_paused(page, first, "R-2")

    page.locator(by_testid("stop-button")).click()

    expect(first).to_have_attribute("data-status", "interrupted")
    expect(first.locator(by_testid("run-outcome"))).to_have_text("Stopped by you")
    expect(card).to_have_attribute("data-status", "cancelled")
    expect(card.get_by_role("button", name="Approve delete_record")).to_have_count(0)
    expect(page.locator(by_testid("approval-waiting"))).to_have_count(0)
    assert stored_call(server, first)["status"] == "cancelled"

    # Esc stops a paused run too.
    second = send(page, "Then delete R-3")
    wait_paused(page, second, "R-3")
    page.locator("body").press("Escape")
    expect(second).to_have_attribute("data-status", "interrupted")

    third = send(page, "Then delete R-4")
    third_card = wait_paused(page, third, "R-4")
    third_card.get_by_role("button", name="Approve delete_record").click()
    expect(third).to_have_attribute("data-status", "complete")
    assert message_text(third).endswith("record R-4 deleted")
    assert session_of(server, third) == session_of(server, first)


def test_reload_while_paused_shows_the_approval_again_and_approving_works(
    page: Page, server: Server
) -> None:
    open_chat(page, server, AGENT)
    answer = send(page, "Please delete R-5")
    wait_paused(page, answer, "R-5")
    run_id = answer.get_attribute("data-run-id")
    page.reload()

    resumed = page.locator(f'{by_testid("message")}[data-run-id="{run_id}"]')
    card = wait_paused(page, resumed, "R-5")
    expect(page.locator(by_testid("error-banner"))).to_have_count(0)
    card.get_by_role("button", name="Approve delete_record").click()

    expect(resumed).to_have_attribute("data-status", "complete")
    expect(card).to_have_attribute("data-status", "ok")
    text = message_text(resumed)
    assert text.startswith("I will delete record R-5, once you approve.")
    assert text.endswith("The tool answered: record R-5 deleted")
    assert text.count("I will delete record R-5") == 1


def test_deciding_on_a_run_cancelled_elsewhere_says_so_and_shows_its_end(
    page: Page, server: Server
) -> None:
    open_chat(page, server, AGENT)
    answer = send(page, "Please delete R-6")
    card = wait_paused(page, answer, "R-6")
    run_id = answer.get_attribute("data-run-id")
    cancelled = httpx.post(f"{server.base_url}/runs/{run_id}/cancel", json={}, timeout=5)
    assert cancelled.json()["status"] == "cancelled"

    card.get_by_role("button", name="Approve delete_record").click()

    banner = page.locator(by_testid("error-message"))
    expect(banner).to_contain_text("no longer waiting for approval")
    expect(answer).to_have_attribute("data-status", "interrupted")
    expect(card).to_have_attribute("data-status", "cancelled")
    expect(page.locator(by_testid("send-button"))).to_be_visible()
