"""Apps for ``--app`` in CLI tests."""

from pydantic_ai import Agent, Tool

from tests.scripted import Delay, ScriptedModel, scripted, text, tool_call
from tether import Tether
from tether.demo import SlowToolsTiming, demo_app

DELETE = "delete_record"


def quick_demo() -> Tether:
    """The demo app with ``slow-tools`` at full speed."""
    return demo_app(timing=SlowToolsTiming(word_s=0, search_s=0, crunch_s=0))


def approval_scripts() -> Tether:
    """Scripted agents whose ``delete_record`` needs approval (fresh scripts for each app).

    - ``bulk-clerk``: asks about two calls at once, then pauses again on a third, then ends.
    - ``slow-clerk``: once approved, streams a few words and then parks until stopped.
    """
    app = Tether()
    bulk = scripted(
        [
            text("Deleting two."),
            tool_call(DELETE, {"record_id": "A-1"}, call_id="call_a"),
            tool_call(DELETE, {"record_id": "B-2"}, call_id="call_b"),
        ],
        [text("And one more."), tool_call(DELETE, {"record_id": "C-3"}, call_id="call_c")],
        [text("All done.")],
    )
    slow = scripted(
        [text("Deleting it."), tool_call(DELETE, {"record_id": "A-1"}, call_id="call_slow")],
        [text("Deleted; now tidying up"), Delay(3600)],
    )
    app.agent("bulk-clerk")(lambda ctx: _clerk(bulk))
    app.agent("slow-clerk")(lambda ctx: _clerk(slow))
    return app


def _clerk(model: ScriptedModel) -> Agent[None, str]:
    def delete_record(record_id: str) -> str:
        return f"record {record_id} deleted"

    return model.agent(tools=[Tool(delete_record, requires_approval=True)])
