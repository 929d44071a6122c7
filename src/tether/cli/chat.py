"""``tether chat``: talk to an agent in the terminal, on the same database as ``tether serve``.

Threads: the engine runs on an event loop in a portal thread; the main thread owns the
terminal. It reads the prompt with a plain blocking ``input()``, so Ctrl+C and Ctrl+D there
behave as in any shell tool (readline restores the terminal before Python sees them), and
both exit. While an answer streams, SIGINT is handled instead of raised: the handler only
asks the engine to stop the run (``Tether.cancel_threadsafe``, safe from any thread), the
streaming loop sees the run end ``cancelled`` and prints ``[stopped]``, and the prompt comes
back. The stopped answer's partial text stays in the session, and the model sees it (marked
as interrupted) on the next turn.
"""

import importlib
import re
import signal
from collections.abc import Callable, Generator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated, Final, assert_never

import typer
from anyio.from_thread import BlockingPortal, start_blocking_portal
from rich.markup import escape
from rich.text import Text

from tether.app import RunHandle, Tether
from tether.cli._apps import load_app
from tether.cli._output import console, print_error, silence_banners
from tether.errors import AgentRunError, NotFound, UsageError
from tether.events import (
    ChildRunFinished,
    ChildRunStarted,
    RunEvent,
    RunFinished,
    RunQueued,
    RunStarted,
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
_ANSI_ESCAPE: Final = re.compile(r"\x1b\[[0-9;]*m")


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
) -> None:
    """Chat with an agent in the terminal. Ctrl+C stops an answer; at the prompt it exits."""
    app = load_app(app_spec, database_url=database_url)
    if agent not in app.agents:
        known = ", ".join(sorted(app.agents)) or "none"
        raise UsageError(f"unknown agent {agent!r} (this app has: {known})", agent=agent)
    silence_banners()
    terminal = ChatTerminal(app, agent, session_id=session)
    with start_blocking_portal(backend="asyncio") as portal, portal.wrap_async_context_manager(app):
        if session is not None:
            portal.call(terminal.resume)
        elif app_spec is None:
            _preload_embedded_model(portal, agent)
        terminal.converse(portal)


class ChatTerminal:
    """One chat: the prompt loop on the main thread, each answer streamed on the portal's loop."""

    def __init__(self, app: Tether, agent: str, *, session_id: str | None) -> None:
        self.app = app
        self.agent = agent
        self.session_id = session_id
        self._run_id: str | None = None
        self._is_stop_requested = False
        self._is_at_line_start = True

    def converse(self, portal: BlockingPortal) -> None:
        """Prompt, answer, repeat, until Ctrl+C or Ctrl+D at the prompt (or ``/exit``)."""
        console.print(
            f"[bold]Chatting with [magenta]{escape(self.agent)}[/].[/] "
            "[dim]Ctrl+C stops an answer; Ctrl+C or Ctrl+D at the prompt exits.[/]"
        )
        try:
            has_readline = _enable_line_editing()
            while (message := _read(PROMPT, has_readline=has_readline)) is not None:
                if message in EXIT_WORDS:
                    break
                if message:
                    self._answer(portal, message)
        finally:
            self._say_goodbye()

    async def resume(self) -> None:
        """Check the session exists for this agent, and show how it ended.

        Raises:
            NotFound: no such session.
            UsageError: the session belongs to another agent.
        """
        assert self.session_id is not None
        session = await self.app.store.get_session(SessionId(self.session_id))
        if session is None:
            raise NotFound(f"no session {self.session_id}", session_id=self.session_id)
        if session.agent != self.agent:
            raise UsageError(
                f"session {self.session_id} belongs to agent {session.agent!r}; "
                f"run: tether chat {session.agent} --session {self.session_id}",
                session_id=self.session_id,
            )
        messages = await self.app.store.messages(SessionId(self.session_id))
        console.print(f"[dim]Resuming session {self.session_id} ({len(messages)} messages)[/]")
        for record in messages[-RECAP_MESSAGES:]:
            console.print(_recap_line(record))

    def _answer(self, portal: BlockingPortal, message: str) -> None:
        self._run_id, self._is_stop_requested = None, False
        try:
            with _sigint_calls(self._request_stop):
                portal.call(self._stream_answer, message)
        except AgentRunError as exc:
            self._end_line()
            print_error(exc.message)
        finally:
            self._run_id = None

    def _request_stop(self) -> None:
        # Runs in the SIGINT handler (main thread). Flag first, then read the run id; the loop
        # sets the id, then reads the flag: whichever comes second sees the other, so a
        # Ctrl+C during `start` is never lost. Stopping twice is harmless.
        self._is_stop_requested = True
        if (run_id := self._run_id) is not None:
            self.app.cancel_threadsafe(run_id, reason="user")

    async def _stream_answer(self, message: str) -> None:
        run = await self.app.start(self.agent, message, session_id=self.session_id)
        self.session_id = run.session_id
        self._run_id = run.run_id
        if self._is_stop_requested:
            self.app.cancel_threadsafe(run.run_id, reason="user")
        console.print(f"[bold magenta]{escape(self.agent)}>[/] ", end="")
        self._is_at_line_start = False
        finished = await self._render(run)
        self._end_line()
        match finished.status:
            case "completed":
                pass
            case "cancelled" | "interrupted":
                label = STOPPED if finished.reason == "user" else f"[stopped: {finished.reason}]"
                console.print(Text(label, style="dim"))
            case "failed":
                print_error(finished.error or "the run failed")

    async def _render(self, run: RunHandle) -> RunFinished:
        async for event in run.events():
            match event:
                case TextDelta(text=text):
                    console.out(text, end="", highlight=False)
                    self._is_at_line_start = text.endswith("\n")
                case RunFinished():
                    return event
                case _:
                    if (note := _describe(event)) is not None:
                        self._end_line()
                        console.print(Text(note, style="dim"))
        raise AssertionError("a run's events end with RunFinished")

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


def _describe(event: RunEvent) -> str | None:
    """One dim line about what the run is doing besides streaming text (None: nothing to say)."""
    match event:
        case ToolCallStarted(tool=tool, args=args):
            shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
            return f"⚙ {tool}({shown}) …"
        case ToolCallFinished(status="ok", result=result):
            return f"  ↳ {_shorten(str(result))}"
        case ToolCallFinished(status=status, error=error):
            return f"  ↳ {status}" + (f": {_shorten(error)}" if error else "")
        case RunQueued(resource=resource):
            return f"(waiting for {resource}, busy with another run)"
        case ChildRunStarted(agent=agent):
            return f"→ delegating to {agent}"
        case ChildRunFinished(status=status, reason=reason):
            return f"← sub-agent {status}" + (f" ({reason})" if reason else "")
        case RunStarted() | StopRequested() | TextDelta() | RunFinished():
            return None
        case _:
            assert_never(event)


def _read(prompt: str, *, has_readline: bool) -> str | None:
    """One line from the user, stripped; None on Ctrl+C or Ctrl+D."""
    with console.capture() as captured:
        console.print(prompt, end="")
    rendered = captured.get()
    if has_readline:
        # Readline must know which prompt bytes take no room, or line editing misplaces the cursor.
        rendered = _ANSI_ESCAPE.sub(lambda m: f"\001{m.group(0)}\002", rendered)
    try:
        return input(rendered).strip()
    except (KeyboardInterrupt, EOFError):
        console.print()
        return None


def _enable_line_editing() -> bool:
    """Arrow keys, history and a terminal restored on Ctrl+C at the prompt, where available."""
    try:
        # Importing it is what turns it on for input().
        importlib.import_module("readline")
    except ImportError:  # pragma: no cover  # not on Windows
        return False
    return True


@contextmanager
def _sigint_calls(callback: Callable[[], None]) -> Generator[None]:
    """While inside, Ctrl+C calls ``callback`` instead of raising ``KeyboardInterrupt``."""

    def handle(signum: int, frame: FrameType | None) -> None:
        callback()

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _preload_embedded_model(portal: BlockingPortal, agent: str) -> None:
    from tether.demo import LOCAL_MODEL_AGENTS

    if agent not in LOCAL_MODEL_AGENTS:
        return
    from tether.runtimes.local import MODEL_NAME, default_local_llama

    with console.status(f"Loading the embedded model ({MODEL_NAME})…"):
        portal.call(default_local_llama().load)


def _recap_line(record: MessageRecord) -> Text:
    content = record.content if len(record.content) <= RECAP_CHARS else record.content[:RECAP_CHARS]
    more = "…" if len(record.content) > RECAP_CHARS else ""
    flag = f" [{record.status}]" if record.status not in ("complete", "streaming") else ""
    return Text(f"{record.role}: {content}{more}{flag}", style="dim")


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= RESULT_CHARS else text[: RESULT_CHARS - 1] + "…"
