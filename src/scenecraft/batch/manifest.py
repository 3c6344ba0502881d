"""``DIR/manifest.jsonl``: one JSON line per attempt at an item, appended with flush and fsync.

The folder's only writer holds an exclusive lock on the manifest while a batch runs. Opening it
cuts a torn last line (a process killed mid-write) and removes leftover temporary files of
atomic PNG writes, so neither ever counts. The latest line of a key says what happened to it.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from ..imagefile import TEMP_SUFFIX
from .items import BatchError

__all__ = ["Manifest", "MANIFEST", "read_manifest"]

MANIFEST = "manifest.jsonl"


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The records of a manifest file, oldest first; a line that is not a JSON object with a ``key``
    (a torn last line, garbage) is left out. A missing file has none."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("key"), str):
            records.append(record)
    return records


class Manifest:
    """The open manifest of a batch folder; use as a context manager (``with Manifest(folder) as m``)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST
        self._fd: int | None = None

    def __enter__(self) -> Manifest:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BatchError(f"{self.folder} is in use by another batch (its {MANIFEST} is locked); wait for it to "
                             "finish, or give another --out") from None
        self._fd = fd
        self._cut_torn_line()
        self.removed_temp = remove_temp_files(self.folder)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None

    def records(self) -> list[dict[str, Any]]:
        """Every record, oldest first."""
        return read_manifest(self.path)

    def latest(self) -> dict[str, dict[str, Any]]:
        """``key -> its latest record``."""
        return {record["key"]: record for record in self.records()}

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line in one ``write``, then fsync it."""
        line = json.dumps(record, ensure_ascii=False, sort_keys=True).encode() + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk: cut what was written, so no torn line stays
            os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
            raise OSError(28, f"cannot write {self.path}: no space left on device")
        os.fsync(self._fd)

    def _cut_torn_line(self) -> None:
        """Truncate the file after its last newline: a line without one was cut mid-write."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        tail = os.pread(self._fd, min(size, 1 << 20), max(0, size - (1 << 20)))
        if tail.endswith(b"\n"):
            return
        end = tail.rfind(b"\n")
        if end < 0 and size > len(tail):  # a torn line longer than 1 MB: find its start further back
            end = _last_newline(self._fd, size - len(tail)) - (size - len(tail))
        os.ftruncate(self._fd, size - len(tail) + end + 1)
        os.fsync(self._fd)


def _last_newline(fd: int, before: int) -> int:
    """The offset of the last newline before ``before`` (-1 if none)."""
    while before > 0:
        start = max(0, before - (1 << 20))
        chunk = os.pread(fd, before - start, start)
        if (found := chunk.rfind(b"\n")) >= 0:
            return start + found
        before = start
    return -1


def remove_temp_files(folder: Path) -> int:
    """Remove the temporary files atomic PNG writes leave when killed (``.NAME.png.*.part``); how many."""
    removed = 0
    for temp in folder.glob(f".*.png.*{TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)
        removed += 1
    return removed
