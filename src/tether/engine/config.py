"""``EngineConfig``: one worker's engine settings, and the fixed bound on a run's final write."""

from dataclasses import dataclass, field

from tether.engine.history import HistoryRules
from tether.engine.policies import RunLimits

FINAL_WRITE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """One worker's engine settings (leases, grace periods, flushing)."""

    worker_id: str
    lease_s: float = 10.0
    heartbeat_s: float = 1.0
    stop_grace_s: float = 10.0
    """How long ``after_turn`` waits for the turn to end before stopping ``now``."""
    hard_stop_s: float = 2.0
    """How long a runtime that stops itself gets before the engine cancels it outright."""
    busy_wait_s: float = 30.0
    generate_titles: bool = False
    """Title a new session by a model after its first answer (``Settings.generate_titles``)."""
    max_runs: int = 100
    """Live runs this worker carries (``Engine.admit``)."""
    max_write_lag_s: float = 2.0
    """How far the recorder's writes may be behind before starts are refused."""
    drain_s: float = 10.0
    """The bound on ``Engine.shutdown``: stopping every run and storing its end."""
    history: HistoryRules = field(default_factory=HistoryRules)
    limits: RunLimits = field(default_factory=RunLimits)
