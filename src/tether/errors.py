"""Every exception tether raises.

```
AgentRunError                 base of everything below
├── UsageError                caller mistake: bad config, unknown agent, bad context
├── NotFound                  no such run / session / message (or not yours)
├── Conflict                  illegal transition, e.g. a second run in a busy session
├── ProviderError             .provider, .status_code, .retryable
├── Overloaded                this worker can't take a run now; .retry_after_s
└── StorageError              database or bus still failing after bounded retries
    └── StorageRejected       the database refused the data itself (retrying won't help)
```

Every error takes a human message plus keyword-only structured fields, kept in ``.details``
so the HTTP layer can put them in problem+json without knowing each class.
"""

from typing import Any


class AgentRunError(Exception):
    """Base class of tether's errors."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details


class UsageError(AgentRunError):
    """The caller made a mistake: bad configuration, unknown agent, invalid context."""


class NotFound(AgentRunError):
    """No such run, session or message, or it belongs to another user."""


class Conflict(AgentRunError):
    """The request is illegal in the current state, e.g. the session already has an active run."""


class ProviderError(AgentRunError):
    """The model provider failed."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = None,
        retryable: bool = False,
        **details: Any,
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code, **details)
        self.provider = provider
        self.status_code = status_code
        self.retryable = retryable


class Overloaded(AgentRunError):
    """This worker can't carry another run now: it is full, behind on its writes, or draining.

    Raised before anything is written. ``retry_after_s`` says when to try again (here, or on
    another worker at once).
    """

    def __init__(self, message: str, *, retry_after_s: float, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after_s = retry_after_s


class StorageError(AgentRunError):
    """The database or the bus kept failing after bounded retries."""


class StorageRejected(StorageError):
    """The database refused the data itself (a value it can't hold): it would refuse it again.

    Not an outage: the write that carried the data fails, and nothing else.
    """
