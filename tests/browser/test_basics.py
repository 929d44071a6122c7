"""Issue #18 in the browser: the chat basics (copy, regenerate, edit, scrolling, highlighting,
the context form) and a sidebar of every agent's sessions."""

import re

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser._ui import assistant_messages, by_testid, open_chat, send, session_of
from tests.browser.basics_app import CODE, LONG_LINES
from tests.browser.conftest import Server

pytestmark = pytest.mark.browser


def user_messages(page: Page) -> Locator:
    return page.locator(f'{by_testid("message")}[data-role="user"]')


def stored_turns(server: Server, session_id: str) -> list[tuple[str, str]]:
    """The session's stored messages as (role, content), in order."""
    response = server.get(f"/sessions/{session_id}")
    response.raise_for_status()
    return [(m["role"], m["content"].strip()) for m in response.json()["messages"]]


def open_chat_without_composer(page: Page, server: Server, agent: str) -> None:
    """Like ``open_chat``, for an agent whose composer waits for its context form."""
    page.goto(server.base_url)
    picker = page.locator(by_testid("agent-picker"))
    expect(picker).to_be_visible()
    picker.select_option(agent)


def clipboard(page: Page) -> str:
    text: str = page.evaluate("navigator.clipboard.readText()")
    return text


def test_code_is_highlighted_and_copy_buttons_copy_the_code_and_the_message(
    page: Page, basics_server: Server
) -> None:
    page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=basics_server.base_url
    )
    open_chat(page, basics_server, "coder")
    answer = send(page, "Add two numbers")
    expect(answer).to_have_attribute("data-status", "complete")
    expect(answer.locator("code.hljs .hljs-keyword").first).to_have_text("def")

    answer.locator(by_testid("copy-code")).click()
    expect(answer.locator(by_testid("copy-code"))).to_have_text("Copied")
    assert clipboard(page) == CODE

    page.locator(by_testid("copy-message")).last.click()
    assert clipboard(page).startswith("Here it is:\n\n```python\ndef add(a, b):")
    page.locator(by_testid("copy-message")).first.click()
    assert clipboard(page) == "Add two numbers"


def test_regenerate_replaces_the_last_answer_here_and_in_storage(
    page: Page, basics_server: Server
) -> None:
    open_chat(page, basics_server, "coder")
    first = send(page, "Add two numbers")
    expect(first).to_have_attribute("data-status", "complete")
    session_id = session_of(basics_server, first)
    first_run = first.get_attribute("data-run-id")

    page.locator(by_testid("regenerate")).click()
    answer = assistant_messages(page).last
    expect(answer).not_to_have_attribute("data-run-id", first_run or "")
    expect(answer).to_have_attribute("data-status", "complete")
    expect(assistant_messages(page)).to_have_count(1)
    expect(user_messages(page)).to_have_text(["Add two numbers"])
    assert [role for role, _ in stored_turns(basics_server, session_id)] == ["user", "assistant"]


def test_edit_sends_the_edited_message_in_place_of_the_last_one(
    page: Page, basics_server: Server
) -> None:
    open_chat(page, basics_server, "coder")
    send(page, "First question")
    expect(assistant_messages(page).last).to_have_attribute("data-status", "complete")
    answer = send(page, "Add two numbrs")
    expect(answer).to_have_attribute("data-status", "complete")
    session_id = session_of(basics_server, answer)

    page.locator(by_testid("edit-message")).click()
    edit = page.locator(by_testid("edit-input"))
    expect(edit).to_be_focused()
    edit.fill("Add two numbers")
    page.locator(by_testid("edit-send")).click()
    expect(user_messages(page)).to_have_text(["First question", "Add two numbers"])
    expect(assistant_messages(page)).to_have_count(2)
    expect(assistant_messages(page).last).to_have_attribute("data-status", "complete")
    users = [text for role, text in stored_turns(basics_server, session_id) if role == "user"]
    assert users == ["First question", "Add two numbers"]
    # Only the last message can be edited.
    expect(page.locator(by_testid("edit-message"))).to_have_count(1)


def test_jump_to_bottom_shows_while_scrolled_up_and_the_list_stays_below_the_title(
    page: Page, basics_server: Server
) -> None:
    open_chat(page, basics_server, "long")
    answer = send(page, "Many lines please")
    expect(answer).to_contain_text(f"line {LONG_LINES - 1}")
    jump = page.locator(by_testid("jump-to-bottom"))
    expect(jump).to_have_count(0)

    messages = page.locator(by_testid("message-list"))
    messages.evaluate("el => el.scrollTo(0, 0)")
    expect(jump).to_be_visible()
    title = page.locator(by_testid("agent-description")).bounding_box()
    first = user_messages(page).first.bounding_box()
    box = messages.bounding_box()
    assert title
    assert first
    assert box
    # The list starts under the title line, and scrolled to the top its first message shows whole.
    assert box["y"] >= title["y"] + title["height"] - 1
    assert first["y"] >= title["y"] + title["height"]

    jump.click()
    expect(jump).to_have_count(0)
    expect(page.get_by_text(f"line {LONG_LINES - 1}")).to_be_in_viewport()
    expect(page.locator(by_testid("composer-input"))).to_be_visible()


def test_an_agent_with_a_context_model_asks_for_it_once_per_session(
    page: Page, basics_server: Server
) -> None:
    open_chat_without_composer(page, basics_server, "profile")
    form = page.locator(by_testid("context-form"))
    expect(form).to_be_visible()
    expect(page.locator(by_testid("composer-input"))).to_be_disabled()
    expect(page.locator(by_testid("context-max_items"))).to_have_value("3")
    page.locator(by_testid("context-submit")).click()
    expect(form).to_contain_text("Required.")

    page.locator(by_testid("context-user_name")).fill("Ada")
    page.locator(by_testid("context-submit")).click()
    expect(form).to_have_count(0)
    expect(page.locator(by_testid("context-summary"))).to_contain_text('user_name = "Ada"')
    answer = send(page, "Hi")
    expect(answer).to_contain_text("Hello Ada, up to 3 items.")
    second = send(page, "Again")
    expect(second).to_contain_text("Hello Ada, up to 3 items.")
    expect(page.locator(by_testid("context-form"))).to_have_count(0)

    # After a reload, the session still has its context; a new chat asks again, prefilled.
    page.reload()
    expect(assistant_messages(page)).to_have_count(2)
    expect(page.locator(by_testid("context-form"))).to_have_count(0)
    page.locator(by_testid("new-chat")).click()
    expect(page.locator(by_testid("context-user_name"))).to_have_value("Ada")


def test_the_sidebar_lists_every_agents_sessions_and_opening_one_switches_agent(
    page: Page, basics_server: Server
) -> None:
    open_chat(page, basics_server, "coder")
    expect(send(page, "Code, please")).to_have_attribute("data-status", "complete")
    open_chat(page, basics_server, "long")
    expect(send(page, "Lines, please")).to_have_attribute("data-status", "complete")

    items = page.locator(by_testid("session-item"))
    expect(items.first.locator(by_testid("session-agent"))).to_have_text("long")
    agent = page.locator(by_testid("session-agent"))
    coder = items.filter(has=agent.filter(has_text="coder")).first
    # A date and a time, e.g. "Dec 8, 12:12 AM".
    expect(coder.locator(by_testid("session-time"))).to_have_text(
        re.compile(r"\w+ \d+.*, \d\d?:\d\d")
    )

    coder.locator(by_testid("session-open")).click()
    expect(page.locator(by_testid("agent-picker"))).to_have_value("coder")
    expect(user_messages(page)).to_have_text(["Code, please"])
