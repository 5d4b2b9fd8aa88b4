"""The rollback journal: each resource is written down before it is acquired, and released in
reverse order whatever happens.

The journal is a JSON-lines file under the state directory, locked while its launcher lives,
so that `nspawn cleanup` can finish the rollback of a launcher that was killed: it reads the
entries of unlocked journals and calls the same release functions the launcher would have.
A release that fails is reported and the others still run.
"""

from __future__ import annotations

import errno
import os
import sys
import time
# collections.abc's own module, loaded with the interpreter: importing the collections
# package for three names in annotations costs 1.3 ms of every run.
from _collections_abc import Callable, Iterator, Mapping

try:  # json's own C string escaping, without the json package, which brings re to every run
    from _json import encode_basestring_ascii as _string
except ImportError:
    from json.encoder import py_encode_basestring_ascii as _string

Releaser = Callable[[dict], None]


def encoded(value) -> str:
    """`value` as json.dumps(value, separators=(",", ":")) writes it, for the journal's lines;
    json.loads reads them (cleanup), so only writing is done here."""
    if isinstance(value, str):
        return _string(value)
    if value is None or isinstance(value, bool):
        return "null" if value is None else "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_string(k if isinstance(k, str) else encoded(k))}:{encoded(v)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(encoded, value)) + "]"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def state_dir() -> str:
    """Where journals live: NSPAWN_STATE_DIR, else a system or per-user runtime directory."""
    # Plain strings rather than pathlib: pathlib's imports cost every launch a few milliseconds.
    explicit = os.environ.get("NSPAWN_STATE_DIR")
    if explicit:
        return explicit
    if sys.platform == "win32":
        return os.path.join(os.environ.get("ProgramData", r"C:\ProgramData"), "nspawn")
    if os.geteuid() == 0:
        return "/run/nspawn"
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/nspawn-{os.geteuid()}", "nspawn")


def _lock(fd: int, blocking: bool) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


# Plain classes, not dataclasses: defining dataclasses costs every launch milliseconds.
class Entry:
    def __init__(self, index: int, kind: str, data: dict, released: bool = False):
        self.index, self.kind, self.data, self.released = index, kind, data, released

    def describe(self) -> str:
        what = self.data.get("what") or next((str(v) for v in self.data.values()), "")
        return f"{self.kind} {what}".strip()


class ReleaseReport:
    def __init__(self, released: list[str] | None = None, failed: list[str] | None = None):
        self.released = released or []
        self.failed = failed or []  # "what: why"


class Journal:
    """One container's journal, open and locked by the launcher that owns it."""

    def __init__(self, container_id: str, backend: str, directory: str | os.PathLike | None = None, **header):
        self.container_id = container_id
        self.backend = backend
        self.directory = os.fspath(directory or state_dir())
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(self.directory, f"{container_id}.journal")
        self.entries: list[Entry] = []
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        _lock(self._fd, blocking=True)
        try:
            self._write({"journal": container_id, "backend": backend, "pid": os.getpid(), "started": time.time(), **header})
        except OSError as e:
            # A journal without its first line (a full state directory) names no backend to
            # release with: it goes, and nothing is acquired without one.
            self.close(remove=True)
            raise OSError(e.errno, f"cannot write the journal {self.path}: {e.strerror}") from None

    def _write(self, line: dict) -> None:
        # No fsync: the journal must survive the launcher's death, not the machine's.
        data = (encoded(line) + "\n").encode()
        if os.write(self._fd, data) != len(data):  # a file system filling up mid-line
            raise OSError(errno.ENOSPC, f"{self.path}: {os.strerror(errno.ENOSPC)}")

    def record(self, kind: str, **data) -> Entry:
        """Write the resource down; call this before acquiring it."""
        entry = Entry(len(self.entries), kind, data)
        self.entries.append(entry)
        self._write({"entry": entry.index, "kind": kind, "data": data})
        return entry

    def update(self, entry: Entry, **data) -> None:
        """Add what became known on acquiring it (a pid, a handle's id)."""
        entry.data.update(data)
        self._write({"update": entry.index, "data": data})

    def release_all(self, releasers: Mapping[str, Releaser]) -> ReleaseReport:
        report = release(self.entries, releasers, self._write)
        # What could not be released stays on disk, an orphan for `nspawn cleanup`: the launcher
        # lets go of it either way, or a batch that goes on would hold it as if the run still lived.
        self.close(remove=not report.failed)
        return report

    def close(self, remove: bool = False) -> None:
        if self._fd is None:
            return
        if remove:
            _unlink(self.path)
        os.close(self._fd)
        self._fd = None


def release(entries: list[Entry], releasers: Mapping[str, Releaser], write: Callable[[dict], None]) -> ReleaseReport:
    """Release entries in reverse order; every release is tried, failures are collected."""
    report = ReleaseReport()
    for entry in reversed(entries):
        if entry.released:
            continue
        try:
            releasers[entry.kind](entry.data)
        except Exception as e:  # a failed release must not stop the others
            report.failed.append(f"{entry.describe()}: {e}")
            continue
        entry.released = True
        write({"released": entry.index})
        report.released.append(entry.describe())
    return report


class Orphan:
    """The journal of a launcher that is gone, as `ps` and `cleanup` see it."""

    def __init__(self, path: str, header: dict, entries: list[Entry], alive: bool):
        self.path, self.header, self.entries, self.alive = path, header, entries, alive

    @property
    def container_id(self) -> str:
        return self.header.get("journal", os.path.basename(self.path).rsplit(".", 1)[0])


def read_journals(directory: str | os.PathLike | None = None) -> Iterator[Orphan]:
    directory = os.fspath(directory or state_dir())
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".journal"))
    except (FileNotFoundError, NotADirectoryError):
        return
    for path in (os.path.join(directory, n) for n in names):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            alive = not _lock(fd, blocking=False)
            header, entries = _parse(path)
        finally:
            os.close(fd)  # before yielding: our probe's lock must not block the caller's finish()
        yield Orphan(path, header, entries, alive)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _parse(path: str) -> tuple[dict, list[Entry]]:
    import json

    header: dict = {}
    entries: list[Entry] = []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # a line cut short by the launcher's death
        if "journal" in line:
            header = line
        elif "entry" in line:
            entries.append(Entry(line["entry"], line["kind"], dict(line["data"])))
        elif "update" in line and line["update"] < len(entries):
            entries[line["update"]].data.update(line["data"])
        elif "released" in line and line["released"] < len(entries):
            entries[line["released"]].released = True
    return header, entries


def finish(orphan: Orphan, releasers: Mapping[str, Releaser]) -> ReleaseReport:
    """Complete the rollback of a dead launcher's journal; remove it when all is released."""
    fd = os.open(orphan.path, os.O_WRONLY | os.O_APPEND)
    try:
        if not _lock(fd, blocking=False):
            return ReleaseReport(failed=[f"{orphan.container_id}: its launcher is still running"])
        report = release(orphan.entries, releasers, lambda line: os.write(fd, (encoded(line) + "\n").encode()))
        if not report.failed:
            _unlink(orphan.path)
        return report
    finally:
        os.close(fd)
