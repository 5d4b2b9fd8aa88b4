"""Config → backend plan → execution → Result, with the rollback that always follows."""

from __future__ import annotations

from nspawn import backends, exitcodes
from nspawn.config.model import Config
from nspawn.errors import Interrupted, NspawnError
from nspawn.result import Result, error_text


def plan(config: Config):
    """The chosen backend's plan: pure, touches nothing, printable as JSON."""
    return backends.load(config.backend).plan(config)


def run(config: Config, *, listener=None, container_id: str | None = None, stdout=None, stderr=None,
        stop=None) -> Result:
    """Run the container to completion. Never raises for a failed run: the Result says what
    happened, and everything acquired has been released (or is listed as not released).
    `listener(event, details)` hears phases and warnings as they happen. Without `stop`, SIGINT
    and SIGTERM stop the run when it is on the main thread; a caller that routes signals itself
    (runs on worker threads) passes a `session.Stop` and calls its `ask(signum)` from anywhere."""
    backend = backends.load(config.backend)
    the_plan = backend.plan(config)
    from nspawn.session import Session, signals_to  # not needed by a dry run
    session = Session(config, listener=listener, container_id=container_id, stdout=stdout, stderr=stderr, stop=stop)
    result = session.result
    try:
        with signals_to(session.stop, active=stop is None):
            try:
                session.open_journal()
                backend.execute(the_plan, session)
            except Interrupted as e:
                result.interrupted_by = e.signum
                result.exit_code = exitcodes.from_signal(e.signum)
            except NspawnError as e:
                result.error, result.exit_code = str(e), e.exit_code
            except OSError as e:
                result.error, result.exit_code = error_text(e), exitcodes.LAUNCHER
            finally:
                # A second Ctrl-C must not cut the rollback short.
                session.stop.deferred = True
                stopped_before_rollback = session.stop.signum is not None
                if session.journal is not None:
                    with session.phase("rollback"):
                        report = session.journal.release_all(backend.RELEASERS)
                    result.rolled_back, result.rollback_failures = report.released, report.failed
                    if report.failed and result.exit_code == exitcodes.OK:
                        result.exit_code = exitcodes.LAUNCHER
                if session.stop.signum and not stopped_before_rollback and result.interrupted_by is None:
                    # The container had ended; a stop that came during the rollback still ends
                    # the launcher as a signal would, so that scripts around it stop too.
                    result.exit_code = exitcodes.from_signal(session.stop.signum)
    except Interrupted as e:  # arrived between handler install and the inner try
        result.interrupted_by, result.exit_code = e.signum, exitcodes.from_signal(e.signum)
    if session.stop.signum and result.interrupted_by is None:
        result.interrupted_by = session.stop.signum
    return result
