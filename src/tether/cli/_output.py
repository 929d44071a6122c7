"""Where the CLI writes, and how tether's errors become one red line and an exit code."""

from typing import Final

from rich.console import Console
from rich.markup import escape

from tether.errors import AgentRunError, Conflict, NotFound, StorageError, UsageError

console: Final = Console(highlight=False)
err_console: Final = Console(stderr=True, highlight=False)

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_STORAGE: Final = 3
EXIT_INTERRUPTED: Final = 130
"""What shells report for a program ended by SIGINT (128 + 2)."""


def exit_code(exc: AgentRunError) -> int:
    """The exit code for one of tether's errors: 2 for caller mistakes, 3 for storage, else 1."""
    if isinstance(exc, UsageError | NotFound | Conflict):
        return EXIT_USAGE
    if isinstance(exc, StorageError):
        return EXIT_STORAGE
    return EXIT_FAILED


def print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] [red]{escape(message)}[/]", soft_wrap=True)


def silence_banners() -> None:
    """Keep Pydantic AI's first-run banner out of the terminal: chat and serve own the output."""
    import pydantic_ai

    pydantic_ai.BANNER_ENABLED = False
