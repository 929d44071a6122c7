"""Session titles: a new session is named after its first message, at once."""

from typing import Final

TITLE_CHARS: Final = 60


def title_from(message: str) -> str:
    """The first line of ``message``, cut at a word boundary to about ``TITLE_CHARS``."""
    words = " ".join(message.split())
    if len(words) <= TITLE_CHARS:
        return words or "New chat"
    cut = (
        words[:TITLE_CHARS].rsplit(" ", 1)[0] if " " in words[:TITLE_CHARS] else words[:TITLE_CHARS]
    )
    return f"{cut.rstrip(' ,.;:')}…"
