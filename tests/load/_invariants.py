"""What every run must satisfy, checked from outside: over HTTP and in the database (issue #13).

A client records what it ``Seen`` of a run (its frames, or the 503 that refused it). The checks
compare that with what is stored and with what the API answers; each broken promise is a
``Violation`` of a named kind, and a ``Tally`` counts them by kind for a table or an assertion:

- ``no_end``: the client's stream ended without ``run_finished``;
- ``terminal_events``: the run has not exactly one ``run_finished`` in ``run_events``;
- ``stored_ending`` / ``event_ending``: the run's row / its stored terminal event ends otherwise
  than the client's terminal frame (status, reason);
- ``stored_text``: the run's stored assistant text is not the text the client was streamed;
- ``message_streaming`` / ``tool_running``: an ended run still has such a message / tool call;
- ``read_run`` / ``read_message_streaming`` / ``read_tool_running`` / ``read_text``: the same,
  as ``GET /runs/{id}`` and ``GET /sessions/{id}`` answer them (the reader's view);
- ``running_rows``: rows left ``running`` (``count_running``).

Used by ``bench/overload.py``, ``bench/stop_storm.py`` and the tests in ``tests/load``.
"""

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.http._sse import Frame

Ending = tuple[str, str | None]
"""A run's status and reason."""


@dataclass
class Seen:
    """What one client saw of one run."""

    run_id: str = ""
    session_id: str = ""
    status_code: int = 0
    """The start's answer: 200, or 503 when the worker refused the run (not a violation)."""
    frames: list[Frame] = field(default_factory=list[Frame])
    refusal: str = ""
    """The body of a start that was not answered 200."""
    broken: str | None = None
    """Why the stream broke before its end (the worker died, the client left), if it did."""
    started_at: float = 0.0
    first_token_at: float | None = None

    @property
    def text(self) -> str:
        return "".join(f.json["text"] for f in self.frames if f.event == "text_delta")

    @property
    def terminal(self) -> Frame | None:
        return next((f for f in reversed(self.frames) if f.event == "run_finished"), None)

    @property
    def ending(self) -> Ending | None:
        if (frame := self.terminal) is None:
            return None
        return frame.json["status"], frame.json["reason"]

    @property
    def last_seq(self) -> int | None:
        return self.frames[-1].seq if self.frames else None


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    run_id: str
    detail: str


@dataclass
class Tally:
    """Violations counted by kind, with the first example of each."""

    counts: Counter[str] = field(default_factory=Counter[str])
    examples: dict[str, Violation] = field(default_factory=dict[str, Violation])
    refused: Counter[int] = field(default_factory=Counter[int])
    """Starts answered other than 200, by status code: a 503 (overload) is no violation."""

    def add(self, violations: list[Violation], *, prefix: str = "") -> None:
        for violation in violations:
            kind = prefix + violation.kind
            self.counts[kind] += 1
            self.examples.setdefault(kind, violation)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """``kind=count`` by kind, or ``none``; then the refused starts, if any."""
        found = ", ".join(f"{k}={n}" for k, n in sorted(self.counts.items())) or "none"
        if self.refused:
            found += f" (refused starts: {dict(self.refused)})"
        return found

    def report(self) -> str:
        """The summary, then one example of each kind: for an assertion message."""
        lines = [self.summary()]
        lines += [f"  {k}: {v.run_id}: {v.detail}" for k, v in sorted(self.examples.items())]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """A run as the database holds it."""

    ending: Ending
    terminal_events: list[tuple[int, Ending]]
    text: str
    message_statuses: list[str]
    tool_statuses: list[str]


async def read_stored(engine: AsyncEngine, run_id: str) -> Stored:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT status, reason FROM runs WHERE id = :id"), {"id": run_id}
            )
        ).one()
        events = (
            await connection.execute(
                text(
                    "SELECT seq, payload FROM run_events"
                    " WHERE run_id = :id AND kind = 'run_finished' ORDER BY seq"
                ),
                {"id": run_id},
            )
        ).all()
        messages = (
            await connection.execute(
                text(
                    "SELECT role, content, status FROM messages WHERE run_id = :id"
                    " ORDER BY created_at"
                ),
                {"id": run_id},
            )
        ).all()
        tools = (
            await connection.execute(
                text("SELECT status FROM tool_calls WHERE run_id = :id"), {"id": run_id}
            )
        ).all()
    terminal: list[tuple[int, Ending]] = []
    for seq, payload in events:
        event = json.loads(payload)
        terminal.append((int(seq), (event["status"], event["reason"])))
    return Stored(
        ending=(row.status, row.reason),
        terminal_events=terminal,
        text="".join(m.content for m in messages if m.role == "assistant"),
        message_statuses=[m.status for m in messages],
        tool_statuses=[t.status for t in tools],
    )


TextRule = Literal["equal", "stored_goes_on", "streamed_goes_on"]
"""How stored text must relate to streamed text: equal; the stored may go on past what the
client got (it left early); the streamed may go on past what was stored (its worker was killed
before flushing: what was stored is what recovery replays)."""


def check_stored(seen: Seen, stored: Stored, *, text_rule: TextRule = "equal") -> list[Violation]:
    """What the database holds of an ended run against what its client saw."""
    found: list[Violation] = []

    def violated(kind: str, detail: str) -> None:
        found.append(Violation(kind, seen.run_id, detail))

    ending = seen.ending
    if ending is None:
        violated("no_end", f"the stream ended after {seen.frames[-1:]} ({seen.broken})")
    if len(stored.terminal_events) != 1:
        violated("terminal_events", f"{stored.terminal_events}")
    if ending is not None and stored.ending != ending:
        violated("stored_ending", f"client saw {ending}, the row says {stored.ending}")
    if ending is not None and any(e != ending for _, e in stored.terminal_events):
        violated("event_ending", f"client saw {ending}, stored {stored.terminal_events}")
    if not _is_text_ok(seen.text, stored.text, text_rule):
        violated("stored_text", _text_detail(seen.text, stored.text))
    if "streaming" in stored.message_statuses:
        violated("message_streaming", f"messages {stored.message_statuses}")
    if "running" in stored.tool_statuses:
        violated("tool_running", f"tool calls {stored.tool_statuses}")
    return found


def _is_text_ok(streamed: str, stored: str, rule: TextRule) -> bool:
    match rule:
        case "equal":
            return stored == streamed
        case "stored_goes_on":
            return stored.startswith(streamed)
        case "streamed_goes_on":
            return streamed.startswith(stored)


async def check_reads(
    client: httpx.AsyncClient, seen: Seen, *, text_rule: TextRule = "equal"
) -> list[Violation]:
    """What ``GET /runs/{id}`` and ``GET /sessions/{id}`` answer against what the client saw."""
    found: list[Violation] = []

    def violated(kind: str, detail: str) -> None:
        found.append(Violation(kind, seen.run_id, detail))

    run: dict[str, Any] = (await client.get(f"/runs/{seen.run_id}")).raise_for_status().json()
    if (run["status"], run["reason"]) != seen.ending:
        violated("read_run", f"client saw {seen.ending}, read {run['status']}, {run['reason']}")
    session = (await client.get(f"/sessions/{seen.session_id}")).raise_for_status().json()
    messages = [m for m in session["messages"] if m["run_id"] == seen.run_id]
    if any(m["status"] == "streaming" for m in messages):
        violated("read_message_streaming", f"messages {[m['status'] for m in messages]}")
    calls = [c["status"] for m in messages for c in m["tool_calls"]]
    if "running" in calls:
        violated("read_tool_running", f"tool calls {calls}")
    stored_text = "".join(m["content"] for m in messages if m["role"] == "assistant")
    if not _is_text_ok(seen.text, stored_text, text_rule):
        violated("read_text", _text_detail(seen.text, stored_text))
    return found


async def count_running(engine: AsyncEngine) -> int:
    """Rows left ``running`` (after a load, or after the worker exited)."""
    async with engine.connect() as connection:
        query = text("SELECT count(*) FROM runs WHERE status = 'running'")
        return int((await connection.execute(query)).scalar_one())


def _text_detail(streamed: str, stored: str) -> str:
    return (
        f"streamed {len(streamed)} chars ({streamed[-20:]!r}),"
        f" stored {len(stored)} ({stored[-20:]!r})"
    )
