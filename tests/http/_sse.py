"""A small, spec-following Server-Sent Events parser for tests."""

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

_LINE = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Frame:
    id: str | None
    event: str
    data: str

    @property
    def seq(self) -> int:
        assert self.id is not None
        return int(self.id)

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.data)


class SseParser:
    """Feed it text as it arrives; it returns the frames each piece completes."""

    def __init__(self) -> None:
        self._pending = ""
        self._id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, text: str) -> list[Frame]:
        lines = _LINE.split(self._pending + text)
        self._pending = lines.pop()
        frames: list[Frame] = []
        for line in lines:
            if frame := self._line(line):
                frames.append(frame)
        return frames

    def _line(self, line: str) -> Frame | None:
        if not line:
            if not self._data and not self._event:
                return None
            frame = Frame(id=self._id, event=self._event or "message", data="\n".join(self._data))
            self._event, self._data = "", []
            return frame
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        match name:
            case "id":
                self._id = value
            case "event":
                self._event = value
            case "data":
                self._data.append(value)
            case _:
                pass
        return None


def parse(text: str) -> list[Frame]:
    return SseParser().feed(text)


async def frames_of(chunks: AsyncIterator[str]) -> AsyncIterator[Frame]:
    parser = SseParser()
    async for chunk in chunks:
        for frame in parser.feed(chunk):
            yield frame
