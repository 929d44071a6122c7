"""``tether chat --url``: the terminal chat as a client of a running ``tether serve``.

Nothing is loaded locally (no app, no model, no database): each message is a
``POST /agents/{agent}/runs`` whose SSE stream is rendered as it arrives. Ctrl+C while an answer
streams sends ``POST /runs/{id}/cancel`` (from the SIGINT handler, on its own connection) and the
stream then ends with the run's one terminal event, as for any viewer. A run that pauses for
approval is asked about with the same prompts as the local chat, then resumed with
``POST /runs/{id}/resume``. Errors the server answers with (problem+json) become tether's own
errors, so they print as one red line.
"""

import json
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Final

import httpx
from pydantic import JsonValue
from rich.markup import escape
from rich.text import Text

from tether.cli._approval import ask_decisions
from tether.cli._output import console, print_error
from tether.cli._terminal import enable_line_editing, read_line, sigint_calls
from tether.errors import AgentRunError, Conflict, NotFound, UsageError
from tether.events import RUN_EVENTS, RunEvent, RunFinished, RunPaused, TextDelta, ToolDecision

CONNECT_TIMEOUT_S: Final = 10.0
CANCEL_TIMEOUT_S: Final = 5.0
# Between two frames of a live run; the server sends keep-alives well within it.
READ_TIMEOUT_S: Final = 120.0


class RemoteChat:
    """One chat with an agent of a running server, over HTTP."""

    def __init__(
        self,
        url: str,
        agent: str,
        *,
        session_id: str | None,
        context: dict[str, JsonValue] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.agent = agent
        self.session_id = session_id
        self.context = context
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        )
        self._run_id: str | None = None
        self._is_stop_requested = False
        self._has_readline = False

    def close(self) -> None:
        self._client.close()

    def check(self) -> None:
        """Fail early, with one clear line, if the server or the agent isn't there.

        Raises:
            UsageError: the server can't be reached, or has no such agent.
        """
        agents = self._request("GET", "/agents").json()
        names = sorted(a["name"] for a in agents)
        if self.agent not in names:
            known = ", ".join(names) or "none"
            raise UsageError(f"{self.url} has no agent {self.agent!r} (it has: {known})")

    def converse(self, prompt: str) -> None:
        """Prompt, answer, repeat, until Ctrl+C or Ctrl+D at the prompt (or ``/exit``)."""
        console.print(
            f"[bold]Chatting with [magenta]{escape(self.agent)}[/] at {escape(self.url)}.[/] "
            "[dim]Ctrl+C stops an answer; Ctrl+C or Ctrl+D at the prompt exits.[/]"
        )
        self._has_readline = enable_line_editing()
        while (message := read_line(prompt, has_readline=self._has_readline)) is not None:
            if message in ("/exit", "/quit"):
                break
            if message:
                try:
                    self._answer(message)
                except AgentRunError as exc:
                    print_error(exc.message)
        if self.session_id is not None:
            console.print(
                f"[dim]Session {self.session_id} · resume with:[/] "
                f"tether chat {self.agent} --url {self.url} --session {self.session_id}",
                soft_wrap=True,
            )

    def _answer(self, message: str) -> None:
        body: dict[str, JsonValue] = {"message": message}
        if self.session_id is not None:
            body["session_id"] = self.session_id
        if self.context is not None:
            body["context"] = self.context
        end = self._stream(f"/agents/{self.agent}/runs", body)
        while isinstance(end, RunPaused):
            decisions = ask_decisions(end.calls, read=self._read)
            if decisions is None:
                self._cancel(end.run_id)
                console.print(Text("[stopped]", style="dim"))
                return
            end = self._stream(f"/runs/{end.run_id}/resume", {"decisions": _decisions(decisions)})

    def _read(self, prompt: str) -> str | None:
        return read_line(prompt, has_readline=self._has_readline)

    def _stream(self, path: str, body: dict[str, JsonValue]) -> RunFinished | RunPaused:
        self._run_id, self._is_stop_requested = None, False
        console.print(f"[bold magenta]{escape(self.agent)}>[/] ", end="")
        at_line_start = False
        try:
            with sigint_calls(self._request_stop), self._open(path, body) as response:
                self._run_id = response.headers.get("X-Run-Id")
                self.session_id = response.headers.get("X-Session-Id", self.session_id)
                if self._is_stop_requested and self._run_id is not None:
                    self._cancel(self._run_id)
                for event in _events(response.iter_lines()):
                    match event:
                        case TextDelta(text=text):
                            console.out(text, end="", highlight=False)
                            at_line_start = text.endswith("\n")
                        case RunFinished() | RunPaused():
                            if not at_line_start:
                                console.print()
                            _report(event)
                            return event
                        case _:
                            pass
        finally:
            self._run_id = None
        raise UsageError("the server ended the stream before the run ended; try again")

    def _request_stop(self) -> None:
        # Runs in the SIGINT handler. Flag first, then read the id; `_stream` sets the id, then
        # reads the flag: whichever comes second sees the other, so no Ctrl+C is lost.
        self._is_stop_requested = True
        if (run_id := self._run_id) is not None:
            self._cancel(run_id)

    def _cancel(self, run_id: str) -> None:
        try:
            with httpx.Client(
                base_url=self.url, headers=self._client.headers, timeout=CANCEL_TIMEOUT_S
            ) as client:
                client.post(f"/runs/{run_id}/cancel", json={"reason": "user"})
        except httpx.HTTPError as exc:
            print_error(f"could not stop run {run_id}: {exc}")

    @contextmanager
    def _open(self, path: str, body: dict[str, JsonValue]) -> Generator[httpx.Response]:
        try:
            with self._client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _problem(response)
                yield response
        except httpx.HTTPError as exc:
            raise UsageError(f"lost {self.url}: {exc}") from exc

    def _request(self, method: str, path: str) -> httpx.Response:
        try:
            response = self._client.request(method, path)
        except httpx.HTTPError as exc:
            raise UsageError(f"can't reach tether at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise _problem(response)
        return response


def cancel_run(url: str, run_id: str, *, api_key: str | None = None) -> dict[str, JsonValue]:
    """Ask a running server to stop a run; its answer (the run's state) as JSON.

    Raises:
        NotFound: no such run.
        UsageError: the server can't be reached or refused.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/runs/{run_id}/cancel",
            json={"reason": "user", "wait": True},
            headers=headers,
            timeout=CONNECT_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        raise UsageError(f"can't reach tether at {url}: {exc}") from exc
    if response.status_code >= 400:
        raise _problem(response)
    answer: dict[str, JsonValue] = response.json()
    return answer


def _events(lines: Iterator[str]) -> Iterator[RunEvent]:
    """RunEvents from SSE lines (one ``data:`` line per frame; comments are keep-alives)."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif not line and data:
            yield RUN_EVENTS.validate_json("\n".join(data))
            data = []


def _report(end: RunFinished | RunPaused) -> None:
    match end:
        case RunFinished(status="cancelled" | "interrupted", reason=reason):
            label = "[stopped]" if reason == "user" else f"[stopped: {reason}]"
            console.print(Text(label, style="dim"))
        case RunFinished(status="failed", error=error):
            print_error(error or "the run failed")
        case _:
            pass


def _decisions(decisions: list[ToolDecision]) -> list[JsonValue]:
    return [
        {
            "call_id": d.call_id,
            "approved": d.approved,
            **({"args": dict(d.args)} if d.args is not None else {}),
            **({"message": d.message} if d.message is not None else {}),
        }
        for d in decisions
    ]


def _problem(response: httpx.Response) -> AgentRunError:
    try:
        problem = response.json()
        detail = str(problem.get("detail") or problem.get("title") or response.reason_phrase)
    except (json.JSONDecodeError, AttributeError):
        detail = response.text.strip() or response.reason_phrase
    match response.status_code:
        case 404:
            return NotFound(detail)
        case 409:
            return Conflict(detail)
        case 401 | 403:
            return UsageError(f"{detail} (pass --api-key)")
        case _:
            return UsageError(detail)
