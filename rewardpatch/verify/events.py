"""Progress and results passed from a verify worker to the command, as JSON lines in a file.

A file rather than a pipe: it also works through torchrun, whose workers do not inherit
the command's descriptors, and it stays in the work dir for a post-mortem.
"""

from __future__ import annotations

import json
from pathlib import Path


class EventWriter:
    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def emit(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"event": event, **fields}) + "\n")


class EventReader:
    """Reads the events appended since the last call; a partial last line waits."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]
