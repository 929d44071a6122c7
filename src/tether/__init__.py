"""tether: the run controller for Python LLM agents."""

from tether.app import RunHandle, Tether
from tether.engine.context import AgentContext
from tether.engine.engine import CancelResult
from tether.engine.history import HistoryRules
from tether.engine.policies import Pricing, RunLimits
from tether.engine.run import RunOutcome
from tether.errors import (
    AgentRunError,
    Conflict,
    NotFound,
    Overloaded,
    ProviderError,
    ProviderTimeout,
    StorageError,
    ToolError,
    UsageError,
)
from tether.events import (
    ChildRunFinished,
    ChildRunStarted,
    PendingCall,
    RunEvent,
    RunFinished,
    RunPaused,
    RunQueued,
    RunResumed,
    RunStarted,
    StopRequested,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolDecision,
    Usage,
)
from tether.settings import Settings

__all__ = [
    "AgentContext",
    "AgentRunError",
    "CancelResult",
    "ChildRunFinished",
    "ChildRunStarted",
    "Conflict",
    "HistoryRules",
    "NotFound",
    "Overloaded",
    "PendingCall",
    "Pricing",
    "ProviderError",
    "ProviderTimeout",
    "RunEvent",
    "RunFinished",
    "RunHandle",
    "RunLimits",
    "RunOutcome",
    "RunPaused",
    "RunQueued",
    "RunResumed",
    "RunStarted",
    "Settings",
    "StopRequested",
    "StorageError",
    "Tether",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolDecision",
    "ToolError",
    "Usage",
    "UsageError",
]
