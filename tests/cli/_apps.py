"""Apps for ``--app`` in CLI tests."""

from tether import Tether
from tether.demo import SlowToolsTiming, demo_app


def quick_demo() -> Tether:
    """The demo app with ``slow-tools`` at full speed."""
    return demo_app(timing=SlowToolsTiming(word_s=0, search_s=0, crunch_s=0))
