"""The ``tether`` command: ``serve``, ``chat``, ``runs``, ``sessions`` and ``db upgrade``.

Expected failures (tether's own errors) print one red line and exit with a code a script can
act on: 2 for a caller mistake (``UsageError``, ``NotFound``, ``Conflict``), 3 when storage is
unavailable (``StorageError``), 1 for the rest. Anything else is a bug and keeps its traceback.
"""

from typing import Any

import typer
from typer.core import TyperGroup

from tether.cli._output import EXIT_INTERRUPTED, err_console, exit_code, print_error
from tether.cli.admin import db_app, runs_app, sessions
from tether.cli.chat import chat
from tether.cli.serve import serve
from tether.errors import AgentRunError


class _TetherGroup(TyperGroup):
    """Maps tether's errors to one red line and an exit code, for every subcommand."""

    # Deliberate: `Any`, since typer vendors click and its `Context` base class is private.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except AgentRunError as exc:
            print_error(exc.message)
            raise typer.Exit(exit_code(exc)) from None
        except BaseExceptionGroup as group:
            # anyio task groups wrap what their tasks raised; one tether error is still expected.
            error = _only_error(group)
            if error is None:
                raise
            print_error(error.message)
            raise typer.Exit(exit_code(error)) from None
        except KeyboardInterrupt:
            err_console.print("[dim]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None


def _only_error(group: BaseExceptionGroup[BaseException]) -> AgentRunError | None:
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
        else:
            leaves.append(exc)
    match leaves:
        case [AgentRunError() as error]:
            return error
        case _:
            return None


app = typer.Typer(
    cls=_TetherGroup,
    name="tether",
    help="The run controller for Python LLM agents: serve, chat, and inspect runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.command("serve")(serve)
app.command("chat")(chat)
app.add_typer(runs_app, name="runs")
app.command("sessions")(sessions)
app.add_typer(db_app, name="db")


def main() -> None:
    """Entry point of the ``tether`` console script."""
    app()


if __name__ == "__main__":
    main()
