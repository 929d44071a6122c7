"""Identifiers: typed string aliases and a sortable id generator."""

import os
import time
from typing import NewType

RunId = NewType("RunId", str)
SessionId = NewType("SessionId", str)
MessageId = NewType("MessageId", str)
UserId = NewType("UserId", str)


def new_id(prefix: str) -> str:
    """Return a new id such as ``run_0192f3a4b5c6d7e8f9a0b1c2``.

    The first 12 hex digits are milliseconds since the epoch, so ids sort by creation time
    (useful for pagination and for humans reading logs); the rest is random.
    """
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{os.urandom(6).hex()}"
