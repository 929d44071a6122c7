"""AG-UI (protocol 1.0): ``POST /agents/{agent}/agui`` with a ``RunAgentInput`` body.

``threadId`` is the tether session (created on first use, owned by the caller); ``runId`` is the
client's, echoed in every event (the tether run id is in the header ``x-tether-run-id``).
tether keeps the history, so only the new user messages (those after the last non-user one)
are taken. Frames are the ``ag-ui-protocol`` package's event models and SSE encoder.

Endings: completed → open message closed, ``RUN_FINISHED`` outcome ``success``; cancelled or
interrupted → open message closed, ``RUN_FINISHED`` outcome ``cancelled`` for clients that
declare ``protocolVersion`` 1.0 or later (older ones, which have no such outcome, get
``RUN_ERROR`` code ``cancelled``: never an ending that reads as success); failed → ``RUN_ERROR``;
paused for approval → ``RUN_FINISHED`` outcome ``interrupt``, one interrupt per waiting call
(its id is the call id). A ``RunAgentInput.resume`` answering those interrupts resumes the
thread's paused run: ``resolved`` approves (``payload.args`` edits the arguments), ``cancelled``
denies. A client that drops the response cancels the run (reason ``disconnect``).

A refusal comes before the stream, as problem+json, which ``HttpAgent`` raises as an HTTP
error (as it does every refusal here): 503 with ``Retry-After`` when the worker can't carry
another run, and then nothing is written.
"""

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any, cast

from ag_ui.core import (
    BaseEvent,
    Interrupt,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from ag_ui.encoder import EventEncoder
from fastapi import APIRouter, Depends, Path
from sse_starlette import EventSourceResponse

from tether.app import RunHandle
from tether.errors import UsageError
from tether.events import (
    RunEvent,
    RunFinished,
    RunPaused,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolDecision,
)
from tether.http.auth import Authenticator
from tether.http.chat_runs import chat_stream, resume_chat_run, start_chat_run
from tether.http.problems import problem_responses
from tether.http.state import HttpState
from tether.ids import UserId

AgentName = Annotated[str, Path(min_length=1, max_length=128)]


def agui_router(state: HttpState, authenticate: Authenticator) -> APIRouter:
    """The AG-UI route, ``POST /agents/{agent}/agui``."""
    user_dep = Depends(authenticate)
    router = APIRouter(tags=["ag-ui"])

    @router.post(
        "/agents/{agent}/agui",
        response_class=EventSourceResponse,
        responses=problem_responses(404, 409, 503),
    )
    async def run_agent(
        agent: AgentName, body: RunAgentInput, user: Annotated[UserId, user_dep]
    ) -> EventSourceResponse:
        """Run the agent on the thread's new user messages (or resume it); AG-UI events."""
        if body.resume:
            handle = await _resume(state, body, user=user)
        else:
            message = _new_user_text(body)
            handle = await start_chat_run(
                state, agent, message, user=user, session_id=body.thread_id
            )
        frames = agui_frames(body, handle.events())
        return chat_stream(state, handle, frames, user=user)

    return router


def _new_user_text(body: RunAgentInput) -> str:
    texts: list[str] = []
    for message in reversed(body.messages):
        if message.role != "user":
            break
        content: Any = message.content
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.append("".join(getattr(p, "text", "") or "" for p in content))
    if not texts:
        raise UsageError("no new user message")
    return "\n\n".join(reversed(texts))


async def _resume(state: HttpState, body: RunAgentInput, *, user: UserId) -> RunHandle:
    decisions: list[ToolDecision] = []
    for entry in body.resume or ():
        raw: object = entry.payload
        payload = cast("dict[str, Any]", raw) if isinstance(raw, dict) else {}
        args = payload.get("args")
        decisions.append(
            ToolDecision(
                call_id=entry.interrupt_id,
                approved=entry.status == "resolved",
                args=cast("dict[str, Any]", args) if isinstance(args, dict) else None,
            )
        )
    return await resume_chat_run(state, session_id=body.thread_id, decisions=decisions, user=user)


def _has_cancelled_outcome(body: RunAgentInput) -> bool:
    version = body.protocol_version or "0"
    return version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 1


async def agui_frames(
    body: RunAgentInput, events: AsyncIterator[RunEvent]
) -> AsyncGenerator[bytes, None]:
    """A run's events as AG-UI SSE frames, ending as the module docstring says."""
    encoder = EventEncoder()

    def frame(event: BaseEvent) -> bytes:
        return encoder.encode(event).encode()

    yield frame(RunStartedEvent(thread_id=body.thread_id, run_id=body.run_id))
    message_id: str | None = None
    async for event in events:
        if message_id is not None and not isinstance(event, TextDelta):
            yield frame(TextMessageEndEvent(message_id=message_id))
            message_id = None
        match event:
            case TextDelta(text=text, seq=seq, run_id=run_id):
                if not text:
                    continue
                if message_id is None:
                    message_id = f"{run_id}-{seq}"
                    yield frame(TextMessageStartEvent(message_id=message_id, role="assistant"))
                yield frame(TextMessageContentEvent(message_id=message_id, delta=text))
            case ToolCallStarted(call_id=call_id, tool=tool, args=args):
                yield frame(ToolCallStartEvent(tool_call_id=call_id, tool_call_name=tool))
                yield frame(ToolCallArgsEvent(tool_call_id=call_id, delta=json.dumps(args)))
                yield frame(ToolCallEndEvent(tool_call_id=call_id))
            case ToolCallFinished(call_id=call_id, result=result, error=error, seq=seq):
                content = json.dumps(result) if error is None else error
                yield frame(
                    ToolCallResultEvent(
                        message_id=f"{event.run_id}-{seq}", tool_call_id=call_id, content=content
                    )
                )
            case RunPaused() | RunFinished():
                yield frame(_ending(event, body=body))
                break
            case _:
                pass


def _ending(event: RunPaused | RunFinished, *, body: RunAgentInput) -> BaseEvent:
    ids = {"thread_id": body.thread_id, "run_id": body.run_id}
    match event:
        case RunPaused(calls=calls, expires_at=expires_at):
            interrupts = [
                Interrupt(
                    id=c.call_id,
                    reason="tool_approval",
                    tool_call_id=c.call_id,
                    message=f"{c.tool} needs approval",
                    expires_at=expires_at.isoformat() if expires_at else None,
                )
                for c in calls
            ]
            return RunFinishedEvent(
                thread_id=ids["thread_id"],
                run_id=ids["run_id"],
                outcome=RunFinishedInterruptOutcome(type="interrupt", interrupts=interrupts),
            )
        case RunFinished(status="completed"):
            return RunFinishedEvent(
                thread_id=ids["thread_id"],
                run_id=ids["run_id"],
                outcome=RunFinishedSuccessOutcome(type="success"),
            )
        case RunFinished(status="failed", error=error):
            return RunErrorEvent(message=error or "the run failed", code="failed")
        case RunFinished(reason=reason):
            if _has_cancelled_outcome(body):
                outcome = RunFinishedCancelledOutcome(type="cancelled")
                return RunFinishedEvent(
                    thread_id=ids["thread_id"],
                    run_id=ids["run_id"],
                    outcome=outcome,
                    result={"reason": reason},
                )
            return RunErrorEvent(message=f"the run was cancelled ({reason})", code="cancelled")
