"""Pydantic AI runtime: drives an ``Agent`` turn with ``Agent.iter`` and reports to the sink.

Stopping builds on Pydantic AI's first-party cancellation: a stop fires the run's
``CancellationToken``, which cancels whatever the run awaits (the model stream is closed, tool
tasks are cancelled and drained) and ends the run with ``RunCancelled`` — caught here, since a
stop is not an error. Sync tools run on a per-run executor: cancellation stops waiting for their
thread at once (``loop.run_in_executor`` futures don't wait), and a result that arrives after
the stop is discarded by the sink and logged.

History comes from tether's records, not from Pydantic AI's message list, so what the next turn
sees is exactly what was streamed and stored.

Approval builds on Pydantic AI's deferred tools: a tool made with ``requires_approval=True`` (or
raising ``ApprovalRequired``) ends the turn with ``DeferredToolRequests``, reported as ``Paused``.
The continuation is a new ``Agent.iter`` over the same history, from tether's records, with the
decisions as ``DeferredToolResults``; the deferred calls still waiting have no result in it.
Calls deferred for external execution (``CallDeferred``) are not supported: the run fails.
"""

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar, cast

from pydantic import JsonValue
from pydantic_ai import (
    Agent,
    CancellationToken,
    DeferredToolRequests,
    DeferredToolResults,
    RunCancelled,
    ToolApproved,
    ToolDenied,
)
from pydantic_ai.capabilities import UseThreadExecutor
from pydantic_ai.messages import (
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelRequest,
    ModelRequestPart,
    ModelResponse,
    ModelResponsePart,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model
from pydantic_core import to_jsonable_python

from tether.errors import UsageError
from tether.events import DEFAULT_DENIAL, PendingCall, ToolDecision, Usage
from tether.records import AssistantItem, HistoryItem, UserItem
from tether.runtimes.base import Paused, ProbesUsage, RunSink, StopSignal, Turn

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class PydanticAIRuntime:
    """Drives Pydantic AI agents; stops them with Pydantic AI's own cancellation."""

    name = "pydantic_ai"
    handles_stop = True

    def __init__(self, *, max_tool_threads: int = 32) -> None:
        self._threads = ThreadPoolExecutor(max_tool_threads, thread_name_prefix="tether-tool")

    def accepts(self, agent: object) -> bool:
        return isinstance(agent, Agent)

    def context_window(self, agent: object) -> int | None:
        model = cast(Agent[Any, Any], agent).model if isinstance(agent, Agent) else None
        return model.profile.get("context_window") if isinstance(model, Model) else None

    async def drive(
        self, agent: object, turn: Turn, sink: RunSink, signal: StopSignal
    ) -> Paused | None:
        assert isinstance(agent, Agent)
        pa_agent = cast(Agent[Any, Any], agent)
        token = CancellationToken()
        signal.on_stop_now(token.cancel)
        executor = _RunExecutor(self._threads, run_id=turn.run_id)
        history, prompt, decided = turn.history, turn.prompt, None
        if turn.resume is not None:
            history = [*turn.history, *turn.resume.items]
            prompt, decided = None, _deferred_results(turn.resume.decisions)
        try:
            async with pa_agent.iter(
                prompt,
                message_history=to_messages(history),
                deferred_tool_results=decided,
                output_type=[pa_agent.output_type, DeferredToolRequests],
                cancellation_token=token,
                capabilities=[UseThreadExecutor(executor)],
            ) as run:
                async for node in run:
                    if Agent.is_model_request_node(node):
                        if signal.is_after_turn_requested:
                            token.cancel()
                        sink.response_started()
                        async with node.stream(run.ctx) as stream:
                            if isinstance(sink, ProbesUsage):
                                sink.probe_usage(functools.partial(_live_usage, stream))
                            async for event in stream:
                                _on_model_event(event, sink)
                        sink.usage(_usage(run.usage))
                    elif Agent.is_call_tools_node(node):
                        async with node.stream(run.ctx) as events:
                            async for event in events:
                                _on_tool_event(event, sink)
        except RunCancelled:
            return None
        finally:
            executor.is_closed = True
        output = run.result.output if run.result is not None else None
        return _paused(output) if isinstance(output, DeferredToolRequests) else None


def _paused(requests: DeferredToolRequests) -> Paused:
    if requests.calls:
        tools = ", ".join(sorted({c.tool_name for c in requests.calls}))
        raise UsageError(f"tools deferred for external execution are not supported: {tools}")
    calls = tuple(
        PendingCall(call_id=c.tool_call_id, tool=c.tool_name, args=_args(c))
        for c in requests.approvals
    )
    return Paused(calls=calls)


def _deferred_results(decisions: Sequence[ToolDecision]) -> DeferredToolResults:
    approvals: dict[str, ToolApproved | ToolDenied] = {}
    for d in decisions:
        if d.approved:
            args = dict(d.args) if d.args is not None else None
            approvals[d.call_id] = ToolApproved(override_args=args)
        else:
            approvals[d.call_id] = ToolDenied(d.message or DEFAULT_DENIAL)
    return DeferredToolResults(approvals=dict(approvals))


def _on_model_event(event: object, sink: RunSink) -> None:
    match event:
        case PartStartEvent(part=TextPart(content=text)):
            sink.text(text)
        case PartDeltaEvent(delta=TextPartDelta(content_delta=text)):
            sink.text(text)
        case _:
            pass


def _on_tool_event(event: object, sink: RunSink) -> None:
    match event:
        case FunctionToolCallEvent(part=part):
            sink.tool_started(part.tool_call_id, part.tool_name, _args(part))
        case FunctionToolResultEvent(part=part):
            ok = part.outcome == "success"
            result: JsonValue = to_jsonable_python(part.content) if ok else None
            error = None if ok else part.model_response_str()
            sink.tool_finished(part.tool_call_id, ok=ok, result=result, error=error)
        case _:
            pass


def _args(part: ToolCallPart) -> Mapping[str, JsonValue]:
    try:
        return part.args_as_dict()
    except ValueError:
        return {"_raw": part.args_as_json_str()}


def _live_usage(stream: Any) -> Usage:
    return _usage(stream.usage)


def _usage(usage: Any) -> Usage:
    return Usage(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, requests=usage.requests
    )


def to_messages(history: Sequence[HistoryItem]) -> list[ModelMessage]:
    """Tether's neutral history -> Pydantic AI messages (every tool call answered)."""
    messages: list[ModelMessage] = []
    for item in history:
        match item:
            case UserItem(text=text):
                messages.append(ModelRequest(parts=[UserPromptPart(content=text)]))
            case AssistantItem():
                messages.extend(_response(item))
    return messages


def _response(item: AssistantItem) -> list[ModelMessage]:
    parts: list[ModelResponsePart] = [TextPart(content=item.text)] if item.text else []
    parts.extend(
        ToolCallPart(tool_name=c.tool, args=dict(c.args), tool_call_id=c.call_id)
        for c in item.tool_calls
    )
    state = "interrupted" if item.is_interrupted else "complete"
    out: list[ModelMessage] = [ModelResponse(parts=parts, state=state)]
    # Calls still waiting for a decision get their results from the continuation's
    # DeferredToolResults, not from history.
    returns: list[ModelRequestPart] = [
        ToolReturnPart(
            tool_name=c.tool,
            content=c.result,
            tool_call_id=c.call_id,
            outcome="failed" if c.is_error else "success",
        )
        for c in item.tool_calls
        if not c.is_pending
    ]
    if returns:
        out.append(ModelRequest(parts=returns))
    return out


class _RunExecutor(Executor):
    """Runs one run's sync tools on the shared pool; logs results that arrive after the stop."""

    def __init__(self, pool: ThreadPoolExecutor, *, run_id: str) -> None:
        self._pool = pool
        self._run_id = run_id
        self.is_closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        def call() -> T:
            result = fn(*args, **kwargs)
            if self.is_closed:
                log.info(
                    "run %s: a sync tool returned after the run ended; discarded", self._run_id
                )
            return result

        return self._pool.submit(call)
