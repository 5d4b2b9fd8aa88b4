"""One run's context shared by the launcher and a backend: identity, journal, timings, limits
reporting, and how Ctrl-C and SIGTERM reach the run."""

from __future__ import annotations

import contextlib
import _signal as signal  # its C module: the signal package imports enum, 2 ms of every run
import threading
import time
from collections.abc import Callable, Iterator

from nspawn.backends.contract import PHASE, WARNING
from nspawn.config.model import Config
from nspawn.errors import Interrupted
from nspawn.identity import new_container_id
from nspawn.journal import Journal
from nspawn.result import Result

Listener = Callable[[str, dict], None]  # (event name, details)


class Stop:
    """A stop request (one of STOP_SIGNALS). While the container process runs, the backend stops
    it politely and then firmly; during setup and teardown the request interrupts at once when
    it comes from a signal handler on the run's own thread (`request`), or at the next phase
    when it comes from another thread (`ask`: a caller running many runs on worker threads)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.event = threading.Event()
        self.deferred = False  # true while the backend handles stops itself
        # Set by a backend while its container process is being started: true once it has
        # started. From that moment its stops are the backend's, before the backend gets to
        # `stops_deferred`: a stop raised then would lose the container's own exit code.
        self.started: Callable[[], bool] | None = None
        self.handled = False  # raised as Interrupted, or seen by the backend's own handling

    def _backends(self) -> bool:
        return self.deferred or (self.started is not None and self.started())

    def request(self, signum: int) -> None:
        """From a signal handler on the thread that runs: raises Interrupted there."""
        first = self.signum is None
        self.ask(signum)
        if first and not self._backends():
            self.handled = True
            raise Interrupted(signum)

    def ask(self, signum: int) -> None:
        """From any thread: never raises; the run acts on it at its next phase or wait tick."""
        self.signum = self.signum or signum
        self.event.set()

    def check(self) -> None:
        """Raise a stop that was asked and not yet acted on, unless the backend handles stops now."""
        if self.signum is not None and not self.handled and not self._backends():
            self.handled = True
            raise Interrupted(self.signum)


class Session:
    def __init__(self, config: Config, *, listener: Listener | None = None, container_id: str | None = None,
                 stdout=None, stderr=None, stop: Stop | None = None):
        self.config = config
        self.container_id = container_id or new_container_id()
        self.listener = listener or (lambda event, details: None)
        self.stop = stop or Stop()
        # Binary streams the container's output is copied to (None: the launcher's fds 1 and 2;
        # a stream with a true `launchers_own` writes there too, so it keeps a terminal's use).
        self.stdout = stdout
        self.stderr = stderr
        self.result = Result(self.container_id, config.backend, exit_code=0)
        self.journal: Journal | None = None

    def open_journal(self) -> Journal:
        image = self.config.resolved_image
        # The image in the header: `nspawn prune` keeps the layers of every journal's container.
        self.journal = Journal(self.container_id, self.config.backend, source=self.config.source,
                               command=[self.config.process_executable, *self.config.process_arguments],
                               **({"image": {"digest": image.digest, "layers": list(image.layer_digests)}}
                                  if image is not None else {}))
        return self.journal

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.stop.check()  # where a stop asked from another thread takes effect
        self.listener(PHASE, {"phase": name})
        start = time.perf_counter()
        try:
            yield
        finally:
            self.result.timings[name] = round(self.result.timings.get(name, 0) + time.perf_counter() - start, 6)

    @contextlib.contextmanager
    def stops_deferred(self) -> Iterator[Stop]:
        """While the container process runs, stop requests are the backend's to act on."""
        self.stop.deferred = True
        try:
            yield self.stop
        finally:
            self.stop.deferred, self.stop.started = False, None
            self.stop.handled |= self.stop.signum is not None  # the backend has acted on it

    def may_have_terminal(self, tty: str) -> bool:
        """Whether the container may be given a terminal (the `tty` field: auto, always, never):
        not when a caller takes its output (a batch job's run), which a terminal would merge
        and which is no terminal anyway; a terminal asked for then is said to be ignored."""
        if tty == "never":
            return False
        if all(getattr(stream, "launchers_own", stream is None) for stream in (self.stdout, self.stderr)):
            return True
        if tty == "always":
            self.warn("tty always is ignored: the caller captures the output, which a terminal would not keep apart")
        return False

    def applied(self, field: str, value: object) -> None:
        self.result.limits_applied[field] = value

    def not_enforced(self, field: str, why: str) -> None:
        self.result.limits_not_enforced[field] = why
        self.listener(WARNING, {"message": f"{field} is not enforced: {why}"})

    def warn(self, message: str) -> None:
        self.listener(WARNING, {"message": message})


# The signals that ask a run to stop. SIGBREAK: Ctrl-Break on a Windows console, which would
# otherwise end the launcher without its rollback.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK") if hasattr(signal, name))


@contextlib.contextmanager
def signals_to(stop: Stop) -> Iterator[None]:
    """Route STOP_SIGNALS to `stop` (main thread only; elsewhere the caller routes them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, lambda signum, frame: stop.request(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
