"""One run's context shared by the launcher and a backend: identity, journal, timings, limits
reporting, and how Ctrl-C and SIGTERM reach the run."""

from __future__ import annotations

# Neither contextlib nor threading (nor the functools and collections they bring): 5 ms of
# every run's imports, for three context managers and a flag.
import _signal as signal  # its C module: the signal package imports enum, 2 ms of every run
import time

from nspawn.backends.contract import PHASE, WARNING
from nspawn.config.model import Config
from nspawn.errors import Interrupted
from nspawn.identity import new_container_id
from nspawn.journal import Journal
from nspawn.result import Result


class Stop:
    """A stop request (one of STOP_SIGNALS). While the container process runs, the backend stops
    it politely and then firmly; during setup and teardown the request interrupts at once when
    it comes from a signal handler on the run's own thread (`request`), or at the next phase
    when it comes from another thread (`ask`: a caller running many runs on worker threads).
    `signum` is set once, by whichever thread asks first; the others read it."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferred = False  # true while the backend handles stops itself
        # Set by a backend while its container process is being started: true once it has
        # started. From that moment its stops are the backend's, before the backend gets to
        # `stops_deferred`: a stop raised then would lose the container's own exit code.
        self.started = None  # a callable () -> bool, or None
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

    def check(self) -> None:
        """Raise a stop that was asked and not yet acted on, unless the backend handles stops now."""
        if self.signum is not None and not self.handled and not self._backends():
            self.handled = True
            raise Interrupted(self.signum)


class Session:
    """`listener(event name, details)` hears phases, warnings and the backend's events."""

    def __init__(self, config: Config, *, listener=None, container_id: str | None = None,
                 stdout=None, stderr=None, stop: Stop | None = None):
        self.config = config
        self.container_id = container_id or new_container_id()
        self.listener = listener or (lambda event, details: None)
        self.stop = stop or Stop()
        # Binary streams the container's output is copied to (None: the launcher's fds 1 and 2;
        # a stream with a true `launchers_own` writes there too, so it keeps a terminal's use,
        # and a backend may write there itself instead and tell the stream's `seen` what).
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

    def phase(self, name: str) -> _Phase:
        """`with session.phase(name):` times the block into the result's timings."""
        return _Phase(self, name)

    def stops_deferred(self) -> _StopsDeferred:
        """`with session.stops_deferred() as stop:` while the container process runs, stop
        requests are the backend's to act on."""
        return _StopsDeferred(self.stop)

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


class _Phase:
    def __init__(self, session: Session, name: str) -> None:
        self.session, self.name = session, name

    def __enter__(self) -> None:
        self.session.stop.check()  # where a stop asked from another thread takes effect
        self.session.listener(PHASE, {"phase": self.name})
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        timings = self.session.result.timings
        timings[self.name] = round(timings.get(self.name, 0) + time.perf_counter() - self.start, 6)


class _StopsDeferred:
    def __init__(self, stop: Stop) -> None:
        self.stop = stop

    def __enter__(self) -> Stop:
        self.stop.deferred = True
        return self.stop

    def __exit__(self, *exc) -> None:
        self.stop.deferred, self.stop.started = False, None
        self.stop.handled |= self.stop.signum is not None  # the backend has acted on it


class signals_to:
    """`with signals_to(stop):` routes STOP_SIGNALS to `stop` on the main thread; on another
    thread (where signal.signal refuses), or when not `active`, the caller routes them."""

    def __init__(self, stop: Stop, active: bool = True) -> None:
        self.stop, self.active, self.previous = stop, active, {}

    def __enter__(self) -> None:
        if not self.active:
            return
        try:
            for s in STOP_SIGNALS:
                self.previous[s] = signal.signal(s, self._handler)
        except ValueError:  # not the main thread: the first signal.signal refuses, none is set
            self.previous.clear()

    def _handler(self, signum: int, frame) -> None:
        self.stop.request(signum)

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
