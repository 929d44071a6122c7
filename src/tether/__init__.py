"""tether: the run controller for Python LLM agents."""

from tether.app import RunHandle, Tether
from tether.bus.base import CancelBus, EventBus
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
    StorageError,
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
    StopAction,
    StopMode,
    StopReason,
    StopRequested,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolDecision,
    Usage,
)
from tether.runtimes.base import Runtime
from tether.settings import Settings
from tether.storage.store import Store

__all__ = [
    "AgentContext",
    "AgentRunError",
    "CancelBus",
    "CancelResult",
    "ChildRunFinished",
    "ChildRunStarted",
    "Conflict",
    "EventBus",
    "HistoryRules",
    "NotFound",
    "Overloaded",
    "PendingCall",
    "Pricing",
    "ProviderError",
    "RunEvent",
    "RunFinished",
    "RunHandle",
    "RunLimits",
    "RunOutcome",
    "RunPaused",
    "RunQueued",
    "RunResumed",
    "RunStarted",
    "Runtime",
    "Settings",
    "StopAction",
    "StopMode",
    "StopReason",
    "StopRequested",
    "StorageError",
    "Store",
    "Tether",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolDecision",
    "Usage",
    "UsageError",
]
