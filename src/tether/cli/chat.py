"""``tether chat``: talk to an agent in the terminal, on the same database as ``tether serve``.

Threads: the engine runs on an event loop in a portal thread; the main thread owns the
terminal. It reads the prompt with a plain blocking ``input()`` (``_terminal.py``), so Ctrl+C
and Ctrl+D there behave as in any shell tool (readline restores the terminal before Python
sees them), and both exit. While an answer streams, SIGINT is handled instead of raised: the
handler only asks the engine to stop the run (``Tether.cancel_threadsafe``, safe from any
thread), the streaming loop sees the run end ``cancelled`` and prints ``[stopped]``, and the
prompt comes back. The stopped answer's partial text stays in the session, and the model sees
it (marked as interrupted) on the next turn.

Approvals: a run that pauses for approval ends its stream with ``RunPaused``, and control
comes back to the main thread, which asks about each pending call with the same blocking
``input()`` (``_approval.py``), then streams the resumed run on the loop again; it may pause
again, so this loops. Ctrl+C or Ctrl+D at a question stops the run: the paused run is
cancelled (reason ``user``), ``[stopped]`` is printed and the prompt comes back, exactly as
for a stopped answer. ``--session`` on a session whose last run is paused asks first.
"""

import functools
import json
from collections.abc import Awaitable, Callable, Generator
from contextlib import contextmanager
from typing import Annotated, Final, assert_never, cast

import typer
from anyio.from_thread import BlockingPortal, start_blocking_portal
from pydantic import JsonValue
from rich.markup import escape
from rich.text import Text

from tether.app import RunHandle, Tether
from tether.cli._approval import PendingApproval, ask_decisions, call_text, find_pending
from tether.cli._apps import load_app
from tether.cli._output import console, print_error, silence_banners
from tether.cli._terminal import enable_line_editing, read_line, sigint_calls
from tether.errors import AgentRunError, NotFound, UsageError
from tether.events import (
    ChildRunFinished,
    ChildRunStarted,
    RunEvent,
    RunFinished,
    RunPaused,
    RunQueued,
    RunResumed,
    RunStarted,
    RunStatus,
    StopReason,
    StopRequested,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)
from tether.ids import SessionId
from tether.records import MessageRecord

PROMPT: Final = "[bold cyan]you>[/] "
STOPPED: Final = "[stopped]"
RESULT_CHARS: Final = 120
RECAP_MESSAGES: Final = 6
RECAP_CHARS: Final = 300
EXIT_WORDS: Final = frozenset({"/exit", "/quit"})

Begin = Callable[[], Awaitable[RunHandle]]
"""Starts or resumes a run, on the engine's loop."""


def chat(
    agent: Annotated[str, typer.Argument(help="The agent to talk to.")] = "assistant",
    session: Annotated[
        str | None,
        typer.Option("--session", help="Continue this session.", show_default=False),
    ] = None,
    app_spec: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="The Tether app, as module:attribute (default: the demo agents).",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="SQLAlchemy URL (default: SQLite under TETHER_DATA_DIR, .tether/).",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Chat through a running `tether serve` (e.g. http://127.0.0.1:8000).",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="With --url: the server's API key.", show_default=False),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            help='The agent\'s context as a JSON object, e.g. \'{"team": "infra"}\'.',
            show_default=False,
        ),
    ] = None,
) -> None:
    """Chat with an agent in the terminal.

    Ctrl+C stops an answer, or a run that waits for your approval; at the prompt it exits.
    """
    given = parse_context(context)
    if url is not None:
        _chat_remotely(url, agent, session_id=session, context=given, api_key=api_key)
        return
    app = load_app(app_spec, database_url=database_url)
    if agent not in app.agents:
        known = ", ".join(sorted(app.agents)) or "none"
        raise UsageError(f"unknown agent {agent!r} (this app has: {known})", agent=agent)
    silence_banners()
    app.agents[agent].validate_context(given)  # a bad --context fails before the first prompt
    terminal = ChatTerminal(app, agent, session_id=session, context=given)
    with start_blocking_portal(backend="asyncio") as portal, portal.wrap_async_context_manager(app):
        waiting = None
        if session is not None:
            waiting = portal.call(terminal.resume)
        elif app_spec is None:
            _preload_embedded_model(portal, agent)
        terminal.converse(portal, waiting=waiting)


class ChatTerminal:
    """One chat: the prompt loop on the main thread, each answer streamed on the portal's loop."""

    def __init__(
        self,
        app: Tether,
        agent: str,
        *,
        session_id: str | None,
        context: dict[str, JsonValue] | None = None,
    ) -> None:
        self.app = app
        self.agent = agent
        self.session_id = session_id
        self.context = context
        self._run_id: str | None = None
        self._is_stop_requested = False
        self._is_at_line_start = True
        self._has_readline = False

    def converse(self, portal: BlockingPortal, *, waiting: PendingApproval | None = None) -> None:
        """Prompt, answer, repeat, until Ctrl+C or Ctrl+D at the prompt (or ``/exit``).

        ``waiting``: a paused run of this session to ask about before the first prompt.
        """
        console.print(
            f"[bold]Chatting with [magenta]{escape(self.agent)}[/].[/] "
            "[dim]Ctrl+C stops an answer; Ctrl+C or Ctrl+D at the prompt exits.[/]"
        )
        try:
            self._has_readline = enable_line_editing()
            if waiting is not None:
                console.print(Text("The last answer waits for your approval.", style="dim"))
                with self._reporting_errors():
                    self._decide(portal, waiting)
            while (message := self._read(PROMPT)) is not None:
                if message in EXIT_WORDS:
                    break
                if message:
                    self._answer(portal, message)
        finally:
            self._say_goodbye()

    async def resume(self) -> PendingApproval | None:
        """Check the session exists for this agent, and show how it ended.

        Returns:
            The session's run that waits for approval, if its last run paused.

        Raises:
            NotFound: no such session.
            UsageError: the session belongs to another agent.
        """
        assert self.session_id is not None
        session_id = SessionId(self.session_id)
        session = await self.app.store.get_session(session_id)
        if session is None:
            raise NotFound(f"no session {self.session_id}", session_id=self.session_id)
        if session.agent != self.agent:
            raise UsageError(
                f"session {self.session_id} belongs to agent {session.agent!r}; "
                f"run: tether chat {session.agent} --session {self.session_id}",
                session_id=self.session_id,
            )
        messages = await self.app.store.messages(session_id)
        console.print(f"[dim]Resuming session {self.session_id} ({len(messages)} messages)[/]")
        for record in messages[-RECAP_MESSAGES:]:
            for line in _recap_lines(record):
                console.print(line)
        return await find_pending(self.app.store, session_id)

    def _read(self, prompt: str) -> str | None:
        return read_line(prompt, has_readline=self._has_readline)

    def _answer(self, portal: BlockingPortal, message: str) -> None:
        with self._reporting_errors():
            waiting = self._stream(portal, functools.partial(self._start, message))
            if waiting is not None:
                self._decide(portal, waiting)

    def _decide(self, portal: BlockingPortal, waiting: PendingApproval) -> None:
        """Ask about each pending call and resume, for as long as the run pauses again."""
        while (decisions := ask_decisions(waiting.calls, read=self._read)) is not None:
            resume = functools.partial(self.app.resume, waiting.run_id, decisions)
            if (paused := self._stream(portal, resume)) is None:
                return
            waiting = paused
        # Deliberate: Ctrl+C is what got us here; pressing it again has nothing more to stop.
        with sigint_calls(lambda: None):
            portal.call(self._stop_paused, waiting.run_id)

    @contextmanager
    def _reporting_errors(self) -> Generator[None]:
        """Tether's errors become one red line, and the chat goes on."""
        try:
            yield
        except AgentRunError as exc:
            self._end_line()
            print_error(exc.message)

    def _stream(self, portal: BlockingPortal, begin: Begin) -> PendingApproval | None:
        """Begin a run and stream it; Ctrl+C meanwhile stops it. What it waits on, if it paused."""
        self._run_id, self._is_stop_requested = None, False
        try:
            with sigint_calls(self._request_stop):
                return portal.call(self._stream_run, begin)
        finally:
            self._run_id = None

    def _request_stop(self) -> None:
        # Runs in the SIGINT handler (main thread). Flag first, then read the run id; the loop
        # sets the id, then reads the flag: whichever comes second sees the other, so a
        # Ctrl+C during `start` (or `resume`) is never lost. Stopping twice is harmless.
        self._is_stop_requested = True
        if (run_id := self._run_id) is not None:
            self.app.cancel_threadsafe(run_id, reason="user")

    async def _start(self, message: str) -> RunHandle:
        run = await self.app.start(
            self.agent, message, session_id=self.session_id, context=self.context
        )
        self.session_id = run.session_id
        # A new answer opens with the agent's name; a resumed run continues the same answer.
        console.print(f"[bold magenta]{escape(self.agent)}>[/] ", end="")
        self._is_at_line_start = False
        return run

    async def _stream_run(self, begin: Begin) -> PendingApproval | None:
        run = await begin()
        self._run_id = run.run_id
        if self._is_stop_requested:
            self.app.cancel_threadsafe(run.run_id, reason="user")
        end = await self._render(run)
        self._end_line()
        if isinstance(end, RunFinished):
            if end.status != "cancelled":
                # The next message may come at once (piped input): let the store catch up
                # first, or it still sees this run active. A stop returns the prompt at once.
                await run.settled()
            _report_end(end.status, end.reason, end.error)
            return None
        if self._is_stop_requested:
            # Ctrl+C as it paused: the stop may have missed the run, so end the pause here.
            await self._stop_paused(run.run_id)
            return None
        return PendingApproval(run_id=run.run_id, calls=end.calls)

    async def _stop_paused(self, run_id: str) -> None:
        """Cancel a paused run for the user, and say how it ended (idempotent)."""
        result = await self.app.cancel(run_id, reason="user")
        _report_end(result.status, result.reason, None)

    async def _render(self, run: RunHandle) -> RunFinished | RunPaused:
        async for event in run.events():
            match event:
                case TextDelta(text=text):
                    console.out(text, end="", highlight=False)
                    self._is_at_line_start = text.endswith("\n")
                case RunFinished() | RunPaused():
                    return event
                case _:
                    if (note := _describe(event)) is not None:
                        self._end_line()
                        console.print(Text(note, style="dim"))
        raise AssertionError("a run's events end with RunFinished or RunPaused")

    def _end_line(self) -> None:
        if not self._is_at_line_start:
            console.print()
            self._is_at_line_start = True

    def _say_goodbye(self) -> None:
        self._end_line()
        if self.session_id is not None:
            console.print(
                f"[dim]Session {self.session_id} · resume with:[/] "
                f"tether chat {self.agent} --session {self.session_id}",
                soft_wrap=True,
            )


def parse_context(text: str | None) -> dict[str, JsonValue] | None:
    """``--context`` as a JSON object.

    Raises:
        UsageError: it is not JSON, or not an object.
    """
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--context is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UsageError(f"--context must be a JSON object, got {text!r}")
    return cast(dict[str, JsonValue], value)


def _chat_remotely(
    url: str,
    agent: str,
    *,
    session_id: str | None,
    context: dict[str, JsonValue] | None,
    api_key: str | None,
) -> None:
    from tether.cli.remote import RemoteChat

    remote = RemoteChat(url, agent, session_id=session_id, context=context, api_key=api_key)
    try:
        remote.check()
        remote.converse(PROMPT)
    finally:
        remote.close()


def _report_end(status: RunStatus, reason: StopReason | None, error: str | None) -> None:
    """Say how a run ended, unless it simply completed."""
    match status:
        case "cancelled" | "interrupted":
            label = STOPPED if reason == "user" else f"[stopped: {reason}]"
            console.print(Text(label, style="dim"))
        case "failed":
            print_error(error or "the run failed")
        case _:
            pass


def _describe(event: RunEvent) -> str | None:
    """One dim line about what the run is doing besides streaming text (None: nothing to say)."""
    match event:
        case ToolCallStarted(tool=tool, args=args):
            return f"⚙ {call_text(tool, args)} …"
        case ToolCallFinished(status="ok", result=result):
            return f"  ↳ {_shorten(str(result))}"
        case ToolCallFinished(status="denied", result=result):
            return "  ↳ denied" + (f": {_shorten(str(result))}" if result else "")
        case ToolCallFinished(status=status, error=error):
            return f"  ↳ {status}" + (f": {_shorten(error)}" if error else "")
        case RunQueued(resource=resource):
            return f"(waiting for {resource}, busy with another run)"
        case ChildRunStarted(agent=agent):
            return f"→ delegating to {agent}"
        case ChildRunFinished(status=status, reason=reason):
            return f"← sub-agent {status}" + (f" ({reason})" if reason else "")
        case (
            RunStarted()
            | StopRequested()
            | TextDelta()
            | RunFinished()
            | RunPaused()
            | RunResumed()
        ):
            return None
        case _:
            assert_never(event)


def _preload_embedded_model(portal: BlockingPortal, agent: str) -> None:
    from tether.demo import LOCAL_MODEL_AGENTS

    if agent not in LOCAL_MODEL_AGENTS:
        return
    from tether.runtimes.local import MODEL_NAME, default_local_llama

    with console.status(f"Loading the embedded model ({MODEL_NAME})…"):
        portal.call(default_local_llama().load)


def _recap_lines(record: MessageRecord) -> list[Text]:
    """A stored message as the recap shows it, then its tool calls and how each ended."""
    content = record.content if len(record.content) <= RECAP_CHARS else record.content[:RECAP_CHARS]
    more = "…" if len(record.content) > RECAP_CHARS else ""
    flag = f" [{record.status}]" if record.status not in ("complete", "streaming") else ""
    lines = [Text(f"{record.role}: {content}{more}{flag}", style="dim")]
    for call in record.tool_calls:
        # A paused run's message is complete; its state is its calls: [awaiting_approval].
        status = f" [{call.status}]" if call.status != "ok" else ""
        lines.append(Text(f"  ⚙ {call_text(call.tool, call.args)}{status}", style="dim"))
    return lines


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= RESULT_CHARS else text[: RESULT_CHARS - 1] + "…"
