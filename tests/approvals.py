"""Shared pieces of the approval (human in the loop) tests: a side effect to approve, and apps
that share one SQLite file (two workers, or one before and after a restart)."""

from typing import Any

from pydantic_ai import Tool

from tether import Settings, Tether


class Outbox:
    """The side effect a person must approve: what was sent, and with which arguments."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def tool(self) -> Tool[None]:
        def send_email(to: str, body: str) -> str:
            self.sent.append({"to": to, "body": body})
            return f"sent to {to}"

        return Tool(send_email, requires_approval=True)


def sql_app(url: str, worker: str) -> Tether:
    """A Tether app on the database at ``url``, as worker ``worker``."""
    return Tether(settings=Settings(database_url=url, worker_id=worker))
