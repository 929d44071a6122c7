"""OpenAI-compatible chat completions (#17), driven by the real ``openai`` SDK on a real server.

Each test checks what the SDK got and what tether recorded: the run's status and reason, the
stored text equal to the streamed text, and the partial text in the next turn's history.
"""

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import openai
import pytest

from tests.http._server import eventually, serving
from tests.scripted import Gate, fail, scripted, text
from tether import Settings, Tether
from tether.http import create_app
from tether.ids import RunId, SessionId
from tether.records import RunRecord
from tether.storage.memory import MemoryStore

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def tether_app() -> Tether:
    return Tether(store=MemoryStore(), settings=Settings(database_url="memory"))


@pytest.fixture
async def base_url(tether_app: Tether) -> AsyncIterator[str]:
    async with serving(create_app(tether_app)) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key="unused", max_retries=0
    ) as client:
        yield client


async def terminal(tether_app: Tether, run_id: str) -> RunRecord:
    with anyio.fail_after(5):
        return await tether_app.engine.wait_terminal(RunId(run_id))


async def assistant_text(tether_app: Tether, run_id: str) -> str:
    messages = await tether_app.engine.store.run_messages(RunId(run_id))
    return "".join(m.content for m in messages if m.role == "assistant")


async def test_models_lists_the_agents(tether_app: Tether, client: openai.AsyncOpenAI) -> None:
    model = scripted()
    tether_app.agent("b")(lambda ctx: model.agent())
    tether_app.agent("a")(lambda ctx: model.agent())
    models = await client.models.list()
    assert [m.id for m in models.data] == ["a", "b"]


async def test_stream_sends_chunks_then_stop_and_usage_and_stores_what_it_sent(
    tether_app: Tether, client: openai.AsyncOpenAI
) -> None:
    model = scripted([text("Hello "), text("world")])
    tether_app.agent("a")(lambda ctx: model.agent())
    stream = await client.chat.completions.create(
        model="a",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    run_id = chunks[0].id
    assert all(c.id == run_id for c in chunks)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == "Hello world"
    ends = [c for c in chunks if c.choices and c.choices[0].finish_reason is not None]
    assert len(ends) == 1
    assert ends[0].choices[0].finish_reason == "stop"
    assert (ends[0].model_extra or {})["tether"]["status"] == "completed"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    assert (await terminal(tether_app, run_id)).status == "completed"
    assert await assistant_text(tether_app, run_id) == streamed


async def test_closing_the_stream_mid_text_cancels_the_run_and_keeps_the_partial_text(
    tether_app: Tether, client: openai.AsyncOpenAI
) -> None:
    gate = Gate()
    model = scripted([text("Hello "), text("wor"), gate, text("never")], [text("ok")])
    tether_app.agent("a")(lambda ctx: model.agent())
    session = "ses-openai-drop"
    headers = {"x-tether-session-id": session}
    stream = await client.chat.completions.create(
        model="a", messages=[{"role": "user", "content": "hi"}], stream=True, extra_headers=headers
    )
    streamed = ""
    run_id = ""
    with anyio.fail_after(5):
        async for chunk in stream:
            run_id = chunk.id
            streamed += chunk.choices[0].delta.content or ""
            if streamed == "Hello wor":
                break
        await gate.reached.wait()
    await stream.close()
    record = await terminal(tether_app, run_id)
    assert (record.status, record.reason) == ("cancelled", "disconnect")
    assert await assistant_text(tether_app, run_id) == streamed
    second = await client.chat.completions.create(
        model="a", messages=[{"role": "user", "content": "again"}], extra_headers=headers
    )
    assert second.choices[0].message.content == "ok"
    history = await tether_app.engine.store.messages(SessionId(session))
    assert [m.content for m in history if m.role == "assistant"] == ["Hello wor", "ok"]
    assert next(m.status for m in history if m.role == "assistant") != "complete"
    assert "Hello wor" in repr(model.received[1])  # the partial text went along


async def test_a_server_side_stop_ends_the_stream_with_a_labelled_stop(
    tether_app: Tether, client: openai.AsyncOpenAI, base_url: str
) -> None:
    gate = Gate()
    model = scripted([text("Hello "), gate, text("never")])
    tether_app.agent("a")(lambda ctx: model.agent())
    stream = await client.chat.completions.create(
        model="a", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks: list[Any] = []
    async with httpx.AsyncClient(base_url=base_url) as http:
        with anyio.fail_after(5):
            async for chunk in stream:
                chunks.append(chunk)
                if chunk.choices and chunk.choices[0].delta.content == "Hello ":
                    await gate.reached.wait()
                    response = await http.post(f"/runs/{chunk.id}/cancel", json={})
                    assert response.json()["accepted"] is True
    end = chunks[-1]
    assert end.choices[0].finish_reason == "stop"
    assert end.model_extra["tether"] == {
        "run_id": end.id,
        "status": "cancelled",
        "reason": "user",
        "error": None,
    }
    record = await terminal(tether_app, end.id)
    assert (record.status, record.reason) == ("cancelled", "user")
    assert await assistant_text(tether_app, end.id) == "Hello "


async def test_non_streaming_answers_one_completion_with_the_stored_text(
    tether_app: Tether, client: openai.AsyncOpenAI
) -> None:
    model = scripted([text("Hello "), text("world")])
    tether_app.agent("a")(lambda ctx: model.agent())
    raw = await client.chat.completions.with_raw_response.create(
        model="a",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": "hi"},
        ],
    )
    completion = raw.parse()
    assert raw.headers["x-tether-run-id"] == completion.id
    assert completion.choices[0].message.content == "Hello world"
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"
    assert (await terminal(tether_app, completion.id)).status == "completed"
    assert await assistant_text(tether_app, completion.id) == "Hello world"
    assert "earlier answer" in repr(model.received[0])  # the client's history went along


async def test_a_failed_run_raises_in_the_sdk_when_streaming(
    tether_app: Tether, client: openai.AsyncOpenAI
) -> None:
    model = scripted([text("Hel"), fail("boom")])
    tether_app.agent("a")(lambda ctx: model.agent())
    stream = await client.chat.completions.create(
        model="a", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    first = await anext(aiter(stream))
    with pytest.raises(openai.APIError, match="boom"):
        _ = [chunk async for chunk in stream]
    run_id = first.id
    assert (await terminal(tether_app, run_id)).status == "failed"


async def test_bad_input_is_a_422_and_an_unknown_model_a_404(
    tether_app: Tether, client: openai.AsyncOpenAI
) -> None:
    model = scripted()
    tether_app.agent("a")(lambda ctx: model.agent())
    with pytest.raises(openai.UnprocessableEntityError):
        await client.chat.completions.create(
            model="a", messages=[{"role": "assistant", "content": "no user message"}]
        )
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "hi"}]
        )


async def test_a_dropped_non_streaming_request_cancels_the_run(
    tether_app: Tether, base_url: str
) -> None:
    gate = Gate()
    model = scripted([text("Hello "), gate, text("never")])
    tether_app.agent("a")(lambda ctx: model.agent())
    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}
    run_id = ""
    async with anyio.create_task_group() as tg, httpx.AsyncClient(base_url=base_url) as http:
        tg.start_soon(lambda: http.post("/v1/chat/completions", json=body))
        with anyio.fail_after(5):
            await gate.reached.wait()
        (run_id,) = tether_app.engine.runs
        tg.cancel_scope.cancel()  # the client goes away mid-request
    record = await terminal(tether_app, run_id)
    assert (record.status, record.reason) == ("cancelled", "disconnect")
    await eventually(lambda: _no_runs(tether_app))


async def _no_runs(tether_app: Tether) -> bool:
    return not tether_app.engine.runs
