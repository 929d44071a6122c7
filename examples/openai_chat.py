"""Talk to a tether agent with the ``openai`` SDK, and stop the run mid-answer.

Run ``make run`` in one terminal, then: ``.venv/bin/python examples/openai_chat.py [agent]``.
Closing the stream after a few chunks cancels the run (reason ``disconnect``); tether keeps the
partial answer, labelled, in the session's history.
"""

import os
import sys

import httpx
from openai import OpenAI

BASE = os.environ.get("TETHER_URL", "http://127.0.0.1:8000")


def main() -> None:
    """Stream an answer, drop the stream after a few chunks, then show how the run ended."""
    client = OpenAI(base_url=f"{BASE}/v1", api_key=os.environ.get("TETHER_API_KEY", "local"))
    model = sys.argv[1] if len(sys.argv) > 1 else client.models.list().data[0].id
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Tell me a long story about a lighthouse."}],
        stream=True,
    )
    run_id = ""
    for i, chunk in enumerate(stream):
        run_id = chunk.id
        print(chunk.choices[0].delta.content or "", end="", flush=True)  # noqa: T201
        if i == 8:
            break
    stream.close()  # the stop: drop the response
    run = httpx.get(f"{BASE}/runs/{run_id}", timeout=10).json()
    print(f"\n-- run {run_id}: {run['status']} ({run['reason']})")  # noqa: T201


if __name__ == "__main__":
    main()
