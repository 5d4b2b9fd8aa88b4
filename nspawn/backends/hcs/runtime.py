"""execute(plan, session) for HCS: the scratch layer, the network, the compute system, the
process; then the teardown of what only this launcher holds (its handles).

Every resource outside this process is in the journal before it exists (layers.py,
network.py, the "hcs-system" entry here) and is released by the launcher afterwards, or by
`nspawn cleanup` if the launcher was killed (release.py).

Stops: HCS calls block and must never be abandoned while running (hcsshim saw computecore.dll
crash with an access violation when a caller gave up on a call and closed handles it still
used: internal/computecore/computecore.go), so stop requests are held back for the whole run
and acted on between calls: during setup and teardown by raising Interrupted at the next stop
check, while the process runs by stopping it politely and then firmly.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from nspawn import exitcodes
from nspawn.backends import contract
from nspawn.backends.hcs import HcsPlan, affinity, documents, layers, network, release, stdio
from nspawn.backends.hcs import console as hcs_console
from nspawn.backends.hcs.generations import GENERATIONS, Exit, Generation, choose, kill
from nspawn.backends.hcs.native.errors import HcsError, LibraryUnavailable, is_process_gone
from nspawn.errors import Interrupted, LaunchError
from nspawn.session import Session, Stop

_TICK = 0.05
OUTPUT_AFTER_EXIT_SECONDS = 1.0  # hcsshim copies output for 1 s after exit (internal/cmd/cmd.go)
OUTPUT_AFTER_STOP_SECONDS = 5.0
KILL_WAIT_SECONDS = 30
# The code of a process terminated after the grace: Linux's for SIGKILL (which Windows' signal
# module lacks), whatever HCS reports for it.
KILLED = exitcodes.from_signal(9)


def execute(plan: HcsPlan, session: Session) -> None:
    try:
        with session.stops_deferred() as stop:
            _execute(plan, session, stop)
    except HcsError as e:
        raise LaunchError(e.message) from None
    except LibraryUnavailable as e:
        raise LaunchError(str(e)) from None


def _execute(plan: HcsPlan, session: Session, stop: Stop) -> None:
    # The session names this run (journal, ps, cleanup): the system and its scratch take its id.
    container_id = session.container_id

    def raise_if_stopped() -> None:
        if stop.signum:
            raise Interrupted(stop.signum)

    generation = GENERATIONS[choose(plan.api)]()
    pinned = _processor_groups(plan)  # before anything is made: a mask this host cannot set fails here
    # Recorded first, so released last: the system's handle closes after the journal released
    # the system, the network and the layers (release.release_system_handle).
    session.journal.record("hcs-system-handle", what=container_id, id=container_id)
    with session.phase("layers"):
        chain = layers.read_chain(plan.parent_layer)
        scratch = layers.Scratch(plan.parent_layer, container_id)
        storage = layers.mount(scratch, chain, session, on_host=plan.isolation == "process",
                               raise_if_stopped=raise_if_stopped)
    attached = None
    if plan.network == "nat":
        with session.phase("network"):
            attach = network.attach_v2 if generation.api == "v2" else network.attach_v1
            attached = attach(session, container_id, raise_if_stopped, plan.ports)
    document = generation.document(_mapped_host_paths_resolved(plan), container_id, storage, attached)
    system_exit = Exit()
    with session.phase("create"):
        session.journal.record("hcs-system", what=container_id, id=container_id, api=generation.api)
        system = generation.create(container_id, document, system_exit)
        release.hold(container_id, system)
    try:
        raise_if_stopped()
        _limits(plan, session, system.id, pinned)
        raise_if_stopped()
        with session.phase("start"):
            generation.start(system)
        raise_if_stopped()
        with session.phase("run"):
            passed_on = _run(plan, session, generation, system, system_exit, stop)
    except BaseException:
        _teardown(session, generation, system, system_exit, quiet=True)
        raise
    _teardown(session, generation, system, system_exit)
    if not passed_on:
        raise_if_stopped()  # a stop that came after the process's end, during the teardown


def _teardown(session: Session, generation: Generation, system, system_exit: Exit, quiet: bool = False) -> None:
    """Stops the system (shutdown, then terminate, as hcsshim's shim closes a task); its handle
    stays open until the journal has released the rest. A failure here must not hide the one
    that caused the teardown."""
    with session.phase("teardown"):
        try:
            generation.stop(system, system_exit)
        except HcsError as e:
            if not quiet:
                raise
            session.warn(e.message)


def _mapped_host_paths_resolved(plan: HcsPlan) -> HcsPlan:
    """Under process isolation the documents map host paths with their symbolic links
    resolved, as hcsshim does because HCS mis-resolves file paths through them
    (internal/hcsoci/hcsdoc_wcow.go, createMountsConfig). At run time, not in the plan: it
    reads the host's file system."""
    if plan.isolation != "process":
        return plan
    return plan._replace(mapped_directories=tuple(m._replace(host_path=os.path.realpath(m.host_path))
                                                  for m in plan.mapped_directories))


def _processor_groups(plan: HcsPlan) -> tuple[tuple[int, int], ...]:
    """The silo's affinity as (processor group, mask), from this host's groups; () for none."""
    if not plan.silo_affinity:
        return ()
    from nspawn.backends.hcs.native import kernel32

    sizes = kernel32.processor_groups()
    groups = affinity.processor_groups(plan.silo_affinity, sizes)
    problem = affinity.refusal(plan.silo_affinity, groups, sizes, kernel32.windows_build())
    if problem:
        raise LaunchError(problem)
    return groups


def _limits(plan: HcsPlan, session: Session, system_id: str, pinned: tuple[tuple[int, int], ...]) -> None:
    """Applies what goes on the silo, then says limit by limit what Windows enforces."""
    if pinned:
        from nspawn.backends.hcs.native import kernel32

        # After create, before start: every process of the silo inherits it (hcsshim
        # internal/hcsoci/cpuaffinity.go).
        kernel32.set_silo_affinity(system_id, dict(pinned))
    for limit in plan.limits:
        if limit.enforced:
            session.applied(limit.field, limit.detail)
        else:
            session.not_enforced(limit.field, limit.detail)


def polite_signal(signum: int | None) -> str:
    """The console event a stop sends, as hcsshim maps signals on RS5+
    (internal/signals/signal.go): SIGINT is CtrlC, Ctrl-Break (SIGBREAK) CtrlBreak, and
    SIGTERM, SIGHUP and a timeout (no signal) CtrlShutdown, the polite stop a service gets."""
    if signum == signal.SIGINT:
        return "CtrlC"
    if signum is not None and signum == getattr(signal, "SIGBREAK", None):
        return "CtrlBreak"
    return "CtrlShutdown"


class _Stopper:
    """The polite stop on a thread of its own, as some images block in the signal call until
    the process ends (hcsshim signals from a background thread for that:
    cmd/containerd-shim-runhcs-v1/exec_hcs.go); `failed` when it could not be delivered."""

    def __init__(self, process, name: str) -> None:
        self.failed = False
        self._thread = threading.Thread(target=self._signal, args=(process, name), daemon=True, name="hcs-signal")
        self._thread.start()

    def _signal(self, process, name: str) -> None:
        try:
            process.signal(name)
        except HcsError as e:
            self.failed = not is_process_gone(e)
        except Exception:  # a missing export (LibraryUnavailable) too: the kill must not wait the grace
            self.failed = True

    def join(self) -> None:
        self._thread.join()  # never abandon a running HCS call: the process has ended by now


def _run(plan: HcsPlan, session: Session, generation: Generation, system, system_exit: Exit, stop: Stop) -> bool:
    """Runs the process to its end; True when a stop request was passed on to it, whose code
    is then the run's, as on Linux: its own when it handles the stop and exits, 137 when it had
    to be terminated after the grace (Linux's SIGKILL)."""
    exited = Exit()
    output = stdio.Output(session, plan.stdout_file)
    process = forwarder = pumps = stopper = resizer = None
    console = hcs_console(plan.tty) if session.may_have_terminal(plan.tty) else None
    try:
        process = generation.create_process(system, documents.process(plan, console), exited)
        if plan.isolation == "process":
            # A Hyper-V container's pid is the utility VM's, naming nothing on this host.
            session.listener(contract.PROCESS, {"what": "container process", "pid": process.pid})
        if process.stdin is not None:
            if console is not None or stdio.stdin_has_input():  # a console's keyboard is input too
                forwarder = stdio.StdinForwarder(process)
            else:
                process.close_stdin()
        if console is not None:
            resizer = stdio.ConsoleSize(process, console)
        pumps = stdio.Pumps(process, output)
        deadline = time.monotonic() + plan.timeout_seconds if plan.timeout_seconds else None
        kill_at = killed_at = None
        timed_out = False
        while not exited.event.wait(_TICK):
            now = time.monotonic()
            if resizer is not None:
                resizer.tick()
            if stopper is None and (stop.signum is not None or (deadline is not None and now >= deadline)):
                timed_out = stop.signum is None
                stopper = _Stopper(process, polite_signal(stop.signum))
                kill_at = now + plan.stop_grace_seconds
            if stopper is not None and stopper.failed and kill_at is not None:
                kill_at = now
            if kill_at is not None and now >= kill_at:
                kill(generation, system.id, process.pid)
                kill_at, killed_at = None, now
            if killed_at is not None and now - killed_at > KILL_WAIT_SECONDS:
                raise LaunchError(f"the container process {process.pid} did not end after HcsTerminateProcess")
        code = generation.exit_code(process, exited)
        if code is None:
            raise LaunchError("HCS did not report the container process's exit code")
        session.result.exit_code = KILLED if killed_at is not None else code
        if timed_out:
            session.result.timed_out = True
            session.result.exit_code = exitcodes.TIMEOUT
        return stopper is not None and stop.signum is not None
    finally:
        if stopper is not None:
            stopper.join()
        if forwarder is not None:
            forwarder.stop()
        if process is not None:
            _close_process(session, generation, system, system_exit, process, exited, pumps)
        output.close()


def _close_process(session: Session, generation: Generation, system, system_exit: Exit, process, exited: Exit,
                   pumps: stdio.Pumps | None) -> None:
    """Readers joined before the handles they read close. HCS may leave an output pipe open
    after the exit, so the join is bounded (as hcsshim's internal/cmd/cmd.go bounds its copy)
    and ending the silo closes what is left."""
    try:
        if not exited.event.is_set():
            kill(generation, system.id, process.pid)  # a setup failure or an error while waiting
        if pumps is not None and not pumps.join(OUTPUT_AFTER_EXIT_SECONDS):
            # HCS kept an output pipe open after the exit: ending the silo closes it.
            generation.stop(system, system_exit)
            if not pumps.join(OUTPUT_AFTER_STOP_SECONDS):
                session.warn("an output pipe of the container stayed open; its handle is left to the launcher's exit")
                process.stdout = process.stderr = None  # never close a handle under a blocked reader
    finally:
        process.close()
