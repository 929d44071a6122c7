"""Reading from the terminal on the main thread: prompt lines, and Ctrl+C while something runs.

``read_line`` is a plain blocking ``input()``, so Ctrl+C and Ctrl+D behave as in any shell tool
(readline restores the terminal before Python sees them); both read as "no answer".
``sigint_calls`` turns Ctrl+C into a callback for as long as work runs elsewhere, so the
callback can ask that work to stop instead of unwinding the main thread.
"""

import importlib
import re
import signal
from collections.abc import Callable, Generator
from contextlib import contextmanager
from types import FrameType
from typing import Final

from tether.cli._output import console

_ANSI_ESCAPE: Final = re.compile(r"\x1b\[[0-9;]*m")


def read_line(prompt: str, *, has_readline: bool) -> str | None:
    """One line from the user after ``prompt`` (rich markup), stripped; None on Ctrl+C or Ctrl+D."""
    try:
        # Inside the try: a Ctrl+C that lands while the prompt is drawn counts as at the prompt.
        with console.capture() as captured:
            console.print(prompt, end="")
        rendered = captured.get()
        if has_readline:
            # Readline must know which prompt bytes take no room, or line editing misplaces
            # the cursor.
            rendered = _ANSI_ESCAPE.sub(lambda m: f"\001{m.group(0)}\002", rendered)
        return input(rendered).strip()
    except (KeyboardInterrupt, EOFError):
        console.print()
        return None


def enable_line_editing() -> bool:
    """Arrow keys, history and a terminal restored on Ctrl+C at the prompt, where available."""
    try:
        # Importing it is what turns it on for input().
        importlib.import_module("readline")
    except ImportError:  # pragma: no cover  # not on Windows
        return False
    return True


@contextmanager
def sigint_calls(callback: Callable[[], None]) -> Generator[None]:
    """While inside, Ctrl+C calls ``callback`` instead of raising ``KeyboardInterrupt``."""

    def handle(signum: int, frame: FrameType | None) -> None:
        callback()

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
