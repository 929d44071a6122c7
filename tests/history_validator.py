"""A strict history validator: what the pickiest providers reject, we reject.

- Messages alternate request/response, starting with a request.
- Every tool call is answered by a result in the very next request, and every result answers a
  call of the previous response.
"""

from collections.abc import Sequence

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ToolCallPart,
    ToolReturnPart,
)


class InvalidHistory(AssertionError):
    pass


def validate_history(messages: Sequence[ModelMessage]) -> None:
    expected_calls: set[str] = set()
    for index, message in enumerate(messages):
        wants_request = index % 2 == 0
        if isinstance(message, ModelRequest) != wants_request:
            raise InvalidHistory(f"message {index} breaks request/response alternation")
        if isinstance(message, ModelRequest):
            answered = {p.tool_call_id for p in message.parts if isinstance(p, ToolReturnPart)}
            if answered != expected_calls:
                calls, answers = sorted(expected_calls), sorted(answered)
                raise InvalidHistory(f"message {index}: calls {calls} answered by {answers}")
            expected_calls = set()
        else:
            expected_calls = {p.tool_call_id for p in message.parts if isinstance(p, ToolCallPart)}
    if expected_calls:
        raise InvalidHistory(f"dangling tool calls at the end: {sorted(expected_calls)}")
