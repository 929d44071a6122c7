"""Tether's history -> what an Agno agent, team or workflow reads as its past.

Agno normally reads history from its own database (``add_history_to_context``). Tether gives it
the history built from its own records instead, so the next turn sees exactly what was
streamed and stored: partial answers with their interrupted marker, and a result for every
tool call. How it gets in, without patching Agno:

- Agents and teams: the messages go into ``additional_input`` on a shallow copy of the agent
  or team, which Agno places after the system message and before the user message (its
  ``get_run_messages`` step 2). The prompt stays a plain string, so Agno still builds the user
  message itself (knowledge references, dependencies). ``input=[Message, ...]`` would carry
  the history for an agent, but a team flattens such a list into one user message's text.
- Workflows: a workflow has no message list; its steps get text. The history becomes the same
  ``<workflow_history_context>`` block Agno's own ``add_workflow_history_to_steps`` writes, in
  front of the prompt (so the first step sees it; Agno's native option gives it to every step).
"""

import copy
import json
from collections.abc import Sequence
from typing import Any, TypeVar, assert_never

from agno.agent import Agent
from agno.models.message import Message
from agno.team import Team

from tether.records import AssistantItem, HistoryItem, UserItem

A = TypeVar("A", bound=Agent | Team)


def to_messages(history: Sequence[HistoryItem]) -> list[Message]:
    """Tether's neutral history -> Agno messages, every tool call followed by its result."""
    messages: list[Message] = []
    for item in history:
        match item:
            case UserItem(text=text):
                messages.append(Message(role="user", content=text))
            case AssistantItem():
                messages.extend(_response(item))
            case _:
                assert_never(item)
    return messages


def _response(item: AssistantItem) -> list[Message]:
    if not item.text and not item.tool_calls:
        return []  # providers reject an empty assistant message; it carries nothing anyway
    calls = [
        {
            "id": call.call_id,
            "type": "function",
            "function": {"name": call.tool, "arguments": json.dumps(dict(call.args))},
        }
        for call in item.tool_calls
    ]
    out = [Message(role="assistant", content=item.text or None, tool_calls=calls or None)]
    out.extend(
        Message(
            role="tool",
            tool_call_id=call.call_id,
            tool_name=call.tool,
            tool_args=dict(call.args),
            content=call.result,
            tool_call_error=call.is_error,
        )
        for call in item.tool_calls
    )
    return out


def with_history(target: A, history: Sequence[HistoryItem]) -> A:
    """A shallow copy of ``target`` that reads ``history`` before the prompt.

    The copy shares the model, tools, members and database with the original; only its
    ``additional_input`` differs, so concurrent runs of one agent don't see each other's
    history. Messages the agent already had in ``additional_input`` (few-shot examples) stay
    first.
    """
    if not history:
        return target
    run_copy = copy.copy(target)
    original: Any = target  # Agno types additional_input with bare generics
    existing: list[Any] = list(original.additional_input or [])
    run_copy.additional_input = [*existing, *to_messages(history)]
    return run_copy


def without_stored_history(agent: Agent) -> Agent:
    """A shallow copy of ``agent`` that reads no history from Agno's database.

    For continuing a paused run: its stored messages already hold tether's history, and
    ``acontinue_run`` takes no ``add_history_to_context`` of its own.
    """
    run_copy = copy.copy(agent)
    run_copy.add_history_to_context = False
    return run_copy


def workflow_input(prompt: str, history: Sequence[HistoryItem]) -> str:
    """The prompt, preceded by the conversation so far in Agno's workflow-history format."""
    runs: list[tuple[str, list[str]]] = []
    for item in history:
        match item:
            case UserItem(text=text):
                runs.append((text, []))
            case AssistantItem(text=text):
                if not runs:
                    runs.append(("", []))
                if text:
                    runs[-1][1].append(text)
            case _:
                assert_never(item)
    if not runs:
        return prompt
    parts = ["<workflow_history_context>"]
    for number, (user_input, outputs) in enumerate(runs, 1):
        parts.append(f"[Workflow Run-{number}]")
        if user_input:
            parts.append(f"User input: {user_input}")
        if outputs:
            output = "\n\n".join(outputs)
            parts.append(f"Workflow output: {output}")
        parts.append("")
    parts.extend(["</workflow_history_context>", prompt])
    return "\n".join(parts)
