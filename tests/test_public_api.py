"""The public surface of ``import tether``: pinned, so a change to it is a deliberate one."""

import tether

PUBLIC = [
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


def test_all_is_the_pinned_public_api() -> None:
    assert tether.__all__ == PUBLIC


def test_every_public_name_is_importable_and_documented() -> None:
    for name in PUBLIC:
        value = getattr(tether, name)
        if isinstance(value, type):
            # A dataclass without a docstring gets its signature as one.
            assert value.__doc__, f"tether.{name} has no docstring"
            assert not value.__doc__.startswith(f"{name}("), f"tether.{name} has no docstring"
