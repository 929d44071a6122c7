"""The demo agents that plain ``tether serve`` and ``tether chat`` offer.

- ``assistant``: a short-answer chat on the embedded SmolLM2 model (offline, no API key).
- ``storyteller``: long-form writing on the embedded model; long answers to try Stop on.
- ``storyteller-team``: an Agno workflow on the embedded model, a writer then an editor (each
  step a child run); offered when the ``agno`` extra is installed.
- ``slow-tools``: a scripted model (no API key) that streams word by word and calls a slow async
  tool and a slow sync tool, to watch a stop land inside each.
- ``records-clerk``: a scripted model (no API key) whose ``delete_record`` tool needs a
  person's approval: the run pauses until you approve or deny it.

Building the app does no I/O: the embedded model loads on the first run that uses it (or when
``tether serve`` preloads it). Each agent family registers itself from its own module; a new
family adds a module and one line in ``demo_app``.
"""

import importlib.util

from tether.app import Tether
from tether.demo.approvals import register_records_clerk
from tether.demo.embedded import LOCAL_MODEL_AGENTS, register_embedded
from tether.demo.slow_tools import SlowToolsTiming, register_slow_tools
from tether.demo.storyteller_team import register_storyteller_team
from tether.settings import Settings

__all__ = ["LOCAL_MODEL_AGENTS", "SlowToolsTiming", "demo_app"]


def demo_app(settings: Settings | None = None, *, timing: SlowToolsTiming | None = None) -> Tether:
    """The demo application (see the module docstring for its agents).

    Args:
        settings: Engine settings; by default read from the environment.
        timing: How slowly ``slow-tools`` streams and how long its tools take.
    """
    app = Tether(settings=settings)
    register_embedded(app)
    register_slow_tools(app, timing or SlowToolsTiming())
    register_records_clerk(app)
    if importlib.util.find_spec("agno") is not None:
        register_storyteller_team(app)
    return app
