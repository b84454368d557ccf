"""Files that are never half-written, and journals of finished work that let a long run resume.

    write_json(out / "metrics.json", metrics)        # temporary file in the same folder, then rename
    atomic_write(out / "a.png", lambda tmp: image.save(tmp, format="PNG"))

    journal = Journal(out / "metrics.json.eval-progress.jsonl", key=inputs_key(checkpoint_digest, data))
    for image_id in ids:
        if image_id in journal: continue                   # done by an earlier, interrupted run
        journal.record(image_id, work(image_id))           # one line, flushed at once
    ...; journal.remove()                                  # after the final outputs are written

A rename within one folder is atomic (POSIX rename, Windows MoveFileEx via os.replace): readers see
the old file or the new one, never a part, and an interrupt (Ctrl-C) or a failing writer leaves the
old file in place and no temporary behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["atomic_write", "atomic_write_all", "write_text", "write_json", "file_digest", "inputs_key", "Journal"]


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(temporary path)` in path's folder, then rename it onto `path`.

    The temporary is `.<name>.<random>.tmp` beside `path`; it is removed if `write` raises (any
    exception, KeyboardInterrupt included), and synced to disk before the rename.
    """
    return atomic_write_all({path: write})[0]


def atomic_write_all(writes: Mapping[str | Path, Callable[[Path], Any]]) -> list[Path]:
    """`atomic_write` for files that belong together (a graph and its cache and report): every
    temporary is written first and only then are they renamed, one after another, so an interrupt or
    a failing writer before the renames leaves all the old files as they were."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in writes.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            staged.append((Path(name), path))
            os.chmod(name, 0o666 & ~_umask())  # mkstemp makes it owner-only; give it a new file's mode
            write(Path(name))
            with open(name, "rb+") as f:
                os.fsync(f.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return [path for _, path in staged]


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write `data` as JSON (with a final newline) to `path` atomically."""
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def file_digest(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inputs_key(*parts: Any) -> str:
    """sha256 hex digest of JSON-able `parts` (paths become strings): equal inputs, equal keys."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Journal:
    """Append-only record of finished steps of one long computation, as JSON lines:

        {"journal": "<what>", "key": "<inputs_key>"}          header
        {"step": "<name>", "value": <JSON>}                    one line per finished step

    Opening an existing journal whose key matches resumes it (`entries` holds its steps); one with
    another key belongs to other inputs and is started afresh, with a line saying so. A line cut off
    by an interrupt is dropped. Lines are flushed, not synced: they survive Ctrl-C and a killed
    process, which is what resuming is for, without a disk sync per step.
    """

    def __init__(self, path: str | Path, key: str, what: str = "progress", resume: bool = True,
                 stream=None):
        self.path, self.key, self.what = Path(path), key, what
        self.stream = stream if stream is not None else sys.stderr
        self.entries: dict[str, Any] = self._read() if resume and self.path.exists() else {}
        self.resumed = len(self.entries)
        self._file = None

    def _read(self) -> dict[str, Any]:
        lines = self.path.read_text(encoding="utf-8", errors="replace").split("\n")
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("key") != self.key:
            print(f"not resuming from {self.path}: it records a run with other inputs; starting afresh",
                  file=self.stream)
            return {}
        entries = {}
        for line in lines[1:]:
            try:
                item = json.loads(line)
                entries[str(item["step"])] = item["value"]
            except (ValueError, KeyError, TypeError):
                continue  # the line an interrupt cut off (or an empty last line)
        return entries

    def __contains__(self, step: object) -> bool:
        return str(step) in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, step: object, default: Any = None) -> Any:
        return self.entries.get(str(step), default)

    def record(self, step: object, value: Any) -> None:
        """Add one finished step (JSON-able `value`) and flush it to the file."""
        if self._file is None:
            # rewrite what is kept (without a cut-off line), atomically, then append to it
            lines = [json.dumps({"journal": self.what, "key": self.key})]
            lines += [json.dumps({"step": s, "value": v}) for s, v in self.entries.items()]
            write_text(self.path, "\n".join(lines) + "\n")
            self._file = open(self.path, "a", encoding="utf-8")
        self.entries[str(step)] = value
        self._file.write(json.dumps({"step": str(step), "value": value}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        """Delete the journal: call it once the final outputs are written."""
        self.close()
        self.path.unlink(missing_ok=True)

