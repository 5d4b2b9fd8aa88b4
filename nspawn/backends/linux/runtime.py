"""execute(plan, session): make the scratch dir and cgroups, start the container, wait for it
(copying its output, enforcing the timeout, passing stop requests on), and read the result.

Nothing is released here: every resource is in the journal before it exists, and the launcher
releases them all afterwards, whatever happened.
"""

from __future__ import annotations

import fcntl
import os
import select
import _signal as signal  # its C module: the signal package imports enum, 2 ms of every run
import time

from nspawn import exitcodes
from nspawn.backends import contract
from nspawn.backends.linux import (cgroups, devices, enforcement, etc_files, hostpaths, hostview, init, limits,
                                   seccomp_filter, userns)
from nspawn.backends.linux.plan import LinuxPlan
from nspawn.backends.linux.release import start_time
from nspawn.config.host import within
from nspawn.config.load import cache_root
from nspawn.errors import ConfigError, LaunchError
from nspawn.output import terminal_asked, to_launcher, write_all
from nspawn.result import error_text
from nspawn.session import Session

_TICK = 0.05  # how often the wait looks at stop requests, which cannot wake poll()
# The output pipes the launcher copies from, and its reads of them: at the pipe's default
# 64 KiB the copy wakes and polls for every 64 KiB the payload writes, and runs at a quarter
# of the payload's own speed; at 1 MiB (the unprivileged pipe-max-size) within a few percent.
_PIPE_BYTES = 1 << 20


def _fail_at() -> tuple[str, str] | None:
    """The test seam NSPAWN_FAIL_AT=<step> or <step>:<SIGNAL NAME> (sent to the launcher)."""
    value = os.environ.get("NSPAWN_FAIL_AT")
    if not value:
        return None
    step, _, sig = value.partition(":")
    return step, sig


def _binds(plan: LinuxPlan, fds: _Fds) -> list[tuple[int, str, str, bool, bool]]:
    """Each bind's source as a detached mount (hostpaths.bind_source), held in `fds`."""
    binds = []
    for m in plan.mounts:
        tree, is_file = hostpaths.bind_source(m.source, m.target)
        fds.add(tree)
        binds.append((tree, m.source, m.target, m.read_only, is_file))
    if plan.host_executable:
        real, base = os.path.realpath(plan.host_executable), os.path.realpath(plan.process_directory)
        if not within(real, base):
            raise LaunchError(f"{plan.host_executable} resolves to {real}, outside the process directory {base}", exitcodes.NOT_FOUND)
    return binds


def _private_users(session: Session, scratch: str, trees: list[tuple[int, str]], fds: _Fds) -> int:
    """A host id range of the container's own, and its user namespace (returned, held in `fds`)
    through which each detached mount of `trees` ((descriptor, its host path): the lower layer
    and the bind sources) is id-mapped."""
    journal = session.journal
    where = userns.directory(journal.directory)
    entry = journal.record("uid_range", directory=where, owner=session.container_id)
    base = userns.allocate(where, session.container_id)
    journal.update(entry, base=base)
    userns_fd = fds.add(userns.namespace(base))[0]
    os.chown(scratch, base, base)  # the container's root makes its layers there (mounts.enter_root)
    for tree, path in trees:
        userns.idmap(tree, userns_fd, path)
    return userns_fd


def _open_stdout(plan: LinuxPlan) -> int:
    name = os.path.relpath(plan.stdout_file, plan.process_directory)
    return hostpaths.open_output(plan.process_directory, name, plan.stdout_file)


def _wants_terminal(plan: LinuxPlan, session: Session) -> bool:
    """A terminal for the payload, as `tty` asks and the session allows; for `auto`, only to
    a launcher in its terminal's foreground (a background one would be stopped taking it)."""
    if not (session.may_have_terminal(plan.tty) and terminal_asked(plan.tty)):
        return False
    if plan.tty == "always":
        return True
    from nspawn.backends.linux import terminal

    return terminal.in_foreground(0)


def _output_pipe(fds: _Fds) -> tuple[int, int]:
    r, w = fds.add(*os.pipe())
    try:
        fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    except OSError:
        pass  # a host whose pipe-max-size is lower: the default size works, only slower
    return r, w


def _read_oom_score_adj() -> str:
    with open("/proc/self/oom_score_adj") as f:
        return f.read().strip()


def _make_cgroups(plan: LinuxPlan, session: Session, fail_at, signal_me) -> tuple[cgroups.Layout | None, dict[str, str]]:
    layout = cgroups.detect()
    verdict = enforcement.judge(plan, layout, limits.needed(plan.limits))
    for name, why in verdict.not_enforced.items():
        session.not_enforced(name, why)
    device_key = devices.group_key(layout)
    if device_key is None:
        session.warn(devices.UNCONFINED)
        if not verdict.controllers:
            return layout, {}
    init.fault_point(fail_at, "cgroups", signal_me)
    cgroups.enable(layout, verdict.controllers)
    groups = cgroups.directories(layout, verdict.controllers, session.container_id)
    if device_key is not None:
        groups.setdefault(device_key, os.path.join(layout.v1[device_key], session.container_id) if layout.version == 1
                          else groups[cgroups.UNIFIED])
    for path in groups.values():
        session.journal.record("cgroup", path=path)
        os.mkdir(path)
    if device_key is not None:
        devices.confine(layout.version, groups[device_key], plan.devices)

    def group(controller: str) -> str:
        return groups[cgroups.group_key(layout, controller)]

    facts = limits.Facts(layout.version, verdict.devices)
    if "cpuset" in verdict.controllers and layout.version == 1:
        with open(os.path.join(os.path.dirname(group("cpuset")), "cpuset.effective_mems")) as f:
            facts = facts._replace(parent_mems=f.read().strip())
    if "memory" in verdict.controllers:
        facts = facts._replace(swap=enforcement.swap(layout, group("memory")))
    for controller, file, value in limits.settings(plan.limits, verdict.controllers, facts):
        cgroups.write(os.path.join(group(controller), file), value)
    applied, failed, caveats = limits.outcome(plan.limits, plan.asked.asked(), verdict.controllers, facts)
    for name, text in applied.items():
        session.applied(name, text)
    for name, why in failed.items():
        session.not_enforced(name, why)
    for caveat in caveats:
        session.warn(caveat)
    return layout, groups


def _syscall_filter(plan: LinuxPlan, session: Session):
    """The payload's seccomp filter, ready for init to load just before exec (None: unconfined,
    which is said); compiled once per profile and capability set, then read from the cache."""
    if plan.seccomp == seccomp_filter.UNCONFINED:
        session.warn("seccomp is unconfined: the payload may make every system call this kernel offers")
        return None
    try:
        found = seccomp_filter.filter_for(plan.seccomp, plan.capability_mask, os.path.join(cache_root(), "seccomp"))
    except ConfigError as e:  # a profile that does not read: the user's to fix
        raise LaunchError("; ".join(map(str, e.problems)), exitcodes.USAGE) from None
    except OSError as e:  # libseccomp missing or refusing the profile, the profile unreadable
        raise LaunchError(f"the seccomp filter cannot be made: {error_text(e)}") from None
    return found.bpf


def _nat():
    from nspawn.backends.linux import nat  # only network "nat" pays for its imports

    return nat


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _hung_up(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, 0)  # POLLHUP is reported whatever is asked
    return any(events & select.POLLHUP for _, events in poller.poll(0))


def _read_report(fd: int, on_init) -> tuple[str | None, int]:
    """(error message, exit code) from the report pipe, read to its end of file; `on_init`
    gets init's pid as soon as it is known."""
    pending, error, code = b"", None, exitcodes.LAUNCHER
    while chunk := os.read(fd, 4096):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            text = line.decode(errors="replace")
            if text.startswith("P"):
                on_init(int(text[1:]))
            elif text.startswith("S"):
                os.kill(os.getpid(), int(text[1:]))
            elif text.startswith("E") and error is None:
                head, _, error = text[1:].partition(" ")
                code = int(head)
    return error, code


class _Fds:
    """The launcher's own descriptors for one run, all closed when it ends, however it ends."""

    def __init__(self) -> None:
        self.open: list[int] = []

    def add(self, *fds: int) -> tuple[int, ...]:
        self.open += fds
        return fds

    def close(self, fd: int) -> None:
        self.open.remove(fd)
        os.close(fd)

    def close_all(self) -> None:
        while self.open:
            self.close(self.open[-1])


def execute(plan: LinuxPlan, session: Session) -> None:
    fds = _Fds()
    try:
        _execute(plan, session, fds)
    finally:
        session.stop.started = None  # it asks about a descriptor closed here
        fds.close_all()


def _execute(plan: LinuxPlan, session: Session, fds: _Fds) -> None:
    journal = session.journal
    fail_at = _fail_at()
    me = os.getpid()
    signal_me = lambda signum: os.kill(me, signum)  # noqa: E731 (a lambda: functools is 1 ms of import)
    result = session.result
    with session.phase("setup"):
        # "": an image's layers, in the store only root writes, named by path (mounts.enter_root)
        lower_tree = fds.add(hostpaths.layer(plan.lower_dir))[0] if plan.lower_dir else None
        binds = _binds(plan, fds)
        stdout_fd = fds.add(_open_stdout(plan))[0] if plan.stdout_file else None
        try:
            init.fault_point(fail_at, "scratch", signal_me)
            scratch = os.path.join(plan.scratch_parent, session.container_id)
            journal.record("scratch", path=scratch)
            os.makedirs(plan.scratch_parent, mode=0o700, exist_ok=True)
            os.mkdir(scratch, 0o700)
            userns_fd = None
            if plan.private_users:
                trees = [(lower_tree, plan.lower_dir)] if lower_tree is not None else []
                trees += [(tree, source) for tree, source, *_ in binds]
                userns_fd = _private_users(session, scratch, trees, fds)
            layout, groups = _make_cgroups(plan, session, fail_at, signal_me)
            with open("/proc/sys/kernel/cap_last_cap") as f:
                cap_last = int(f.read())
        except OSError as e:
            raise LaunchError(f"setting up the container failed: {error_text(e)}") from None
        syscall_filter = _syscall_filter(plan, session)
        lease = _nat().prepare(session, plan.ports) if plan.network == "nat" else None
        ready_r, ready_w = fds.add(*os.pipe()) if lease else (-1, -1)
        etc = etc_files.prepare(plan.resolv_conf, plan.timezone, plan.network == "host", session.warn,
                                hostview.hides if plan.host_view == hostview.OS else None)
        if plan.host_view == hostview.FULL:
            session.warn(hostview.FULL_WARNING)
        if "MKNOD" in plan.capabilities:
            session.warn("allow_mknod: the payload keeps CAP_MKNOD and may make device nodes (only /dev's standard ones open)")
        report_r, report_w = fds.add(*os.pipe())
        status_r, status_w = fds.add(*os.pipe())
        tty = channel = None
        if _wants_terminal(plan, session):
            from nspawn.backends.linux import terminal

            tty, channel = terminal.prepare()
            fds.add(channel)
        copying = tty is None and (stdout_fd is not None or session.stdout is not None or session.stderr is not None)
        pump = (_output_pipe(fds), _output_pipe(fds)) if copying else ()
        launch = init.Launch(
            plan=plan, launcher_pid=me,
            cgroup_v2=groups.get(cgroups.UNIFIED),
            cgroup_joins=[os.path.join(p, "cgroup.procs" if key == cgroups.UNIFIED else "tasks") for key, p in groups.items()],
            cgroup_view=cgroups.namespace_view(layout, groups) if groups else [],
            scratch=scratch, lower_tree=lower_tree,
            hide=(plan.scratch_parent, journal.directory) if plan.host_view == hostview.OS else None,
            binds=binds, report_w=report_w, status_w=status_w,
            output_w=(pump[0][1], pump[1][1]) if pump else None,
            oom_score_adj=_read_oom_score_adj(), cap_last=cap_last, max_fd=os.sysconf("SC_OPEN_MAX"), fail_at=fail_at,
            seccomp=syscall_filter, tty=tty, etc=etc, userns_fd=userns_fd, network_ready=ready_r,
        )
        init.fault_point(fail_at, "fork", signal_me)
        a_entry = journal.record("process", what="container launcher child")
        b_entry = journal.record("process", what="container init")
        a_pid = init.start(launch)
        journal.update(a_entry, pid=a_pid, start=start_time(a_pid))
        for fd in (report_w, status_w, *(w for _, w in pump), *((ready_r,) if lease else ())):
            fds.close(fd)  # the children hold them now; their closing is how the launcher hears
        if tty is not None:
            tty.channel.close()  # init's end, theirs now: kept here, an init that died would never read as one
        init_pid = None
        # The report pipe hangs up once no process of the container holds it: the payload was
        # exec'd (or setup failed and said so). From then on a stop is the run's (session.Stop).
        session.stop.started = lambda: _hung_up(report_r)

        def on_init(pid: int) -> None:
            nonlocal init_pid
            init_pid = pid
            journal.update(b_entry, pid=pid, start=start_time(pid))
            session.listener(contract.PROCESS, {"what": "container init", "pid": pid})
            if lease:  # init waits for this before forking the payload
                _nat().attach(session, lease, pid, b_entry.data["start"])
                os.write(ready_w, b"1")

        error, code = _read_report(report_r, on_init)
        if error:
            raise LaunchError(error, code)
        if init_pid is None:
            raise LaunchError("the container's first process died before starting its init")
        master = None
        if tty is not None:
            master = terminal.receive_master(channel)
            if master is None:
                raise LaunchError("the container's init ended before handing over the terminal")
            fds.add(master)

    # Until the container's exit status is read, a stop is the container's to act on: one that
    # comes as it ends (a Ctrl-C reaches both at once) must not cost the run that status.
    relay = None
    try:
        with session.phase("run"), session.stops_deferred() as stop:
            if master is not None:
                relay = terminal.Relay(master)
                init.fault_point(fail_at, "relay", signal_me)  # the terminal is raw now: is it given back?
            a_status, timed_out = _wait(plan, stop, session, fds, a_pid, init_pid, tuple(r for r, _ in pump), stdout_fd,
                                        relay)
            raw = os.read(status_r, 4)
    finally:
        if relay is not None:
            relay.restore()
    if raw:
        code = os.waitstatus_to_exitcode(int.from_bytes(raw, "little"))
        exit_code, result.signal = (128 - code, -code) if code < 0 else (code, None)
    else:  # init itself was killed: A exited with its code, or was killed too (from outside), taking init along
        code = os.waitstatus_to_exitcode(a_status)
        exit_code, result.signal = (128 - code, -code) if code < 0 else (code, code - 128 if code > 128 else None)
    result.exit_code = exit_code
    if layout is not None and groups:
        kills, result.peak_memory_bytes = cgroups.memory_stats(layout, groups)
        if kills and exit_code == 128 + signal.SIGKILL:
            result.oom_killed = True  # said by the Result's outcome, as the timeout is
    if timed_out:
        result.timed_out = True
        result.exit_code = exitcodes.TIMEOUT


def _wait(plan: LinuxPlan, stop, session: Session, fds: _Fds, a_pid: int, init_pid: int, outputs: tuple[int, ...],
          stdout_fd: int | None, relay) -> tuple[int, bool]:
    """Wait for the container to end, copying its output (from its pipes, or its terminal's
    master: `relay`, which also takes the launcher's input) and acting on `stop` (the
    session's, deferred to this wait); returns (A's wait status, timed out)."""
    pidfd = fds.add(os.pidfd_open(a_pid))[0]
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    if relay is not None:
        outputs = (relay.master,)
        relay.watch(poller)
    for fd in outputs:
        poller.register(fd, select.POLLIN)
    open_outputs = set(outputs)
    destinations = {fd: (stream, n) for fd, stream, n in zip(outputs, (session.stdout, session.stderr), (1, 2))}
    # Where the launcher's own descriptor takes an output (no caller's stream, or one that only
    # watches what goes there), a Mover takes it there without blocking.
    movers = {fd: (n, stream) for fd, (stream, n) in destinations.items()
              if getattr(stream, "launchers_own", stream is None)}
    if movers:  # only a run that copies its output imports it (start-up)
        from nspawn.backends.linux import outputcopy

        movers = {fd: outputcopy.Mover(fd, n, stdout_fd, lambda: _output_pipe(fds), lambda own: fds.add(own)[0],
                                       _PIPE_BYTES, read=relay.read_output if relay is not None else None,
                                       seen=getattr(stream, "seen", None))
                  for fd, (n, stream) in movers.items()}
    start = time.monotonic()
    deadline = start + plan.timeout_seconds if plan.timeout_seconds else None
    kill_at = None
    stopping = timed_out = False

    waiting: dict[int, int] = {}  # the launcher's stdout or stderr with no room -> the output waiting for it

    def ended(fd: int) -> None:
        poller.unregister(fd)
        open_outputs.discard(fd)

    def copy(fd: int) -> bool:
        """Copies what `fd` has; False when it had nothing (its end, or a terminal with
        nothing waiting after all)."""
        if fd in movers:
            more = movers[fd]()
            if movers[fd].waiting:
                poller.unregister(fd)
                park(fd)
            elif movers[fd].ended:
                ended(fd)
            return more
        data = os.read(fd, _PIPE_BYTES)
        if not data:
            ended(fd)
            return False
        to_launcher(*destinations[fd], data)
        if stdout_fd is not None:
            write_all(stdout_fd, data)
        return True

    def park(fd: int) -> None:
        """Its payload waits, until the launcher's descriptor has room for what its mover holds."""
        waiting[movers[fd].room] = fd
        poller.register(movers[fd].room, select.POLLOUT)

    def resume(out: int) -> None:
        fd = waiting.pop(out)
        poller.unregister(out)
        movers[fd].resume()
        if movers[fd].waiting:
            park(fd)
        else:
            poller.register(fd, select.POLLIN)

    def stop_politely(now: float, signum: int) -> None:
        nonlocal kill_at, stopping
        if not stopping:
            stopping = True
            _signal(init_pid, signum)
            kill_at = now + plan.stop_grace_seconds

    exited = False
    while not exited:
        now = time.monotonic()
        if stop.signum is not None:
            # The signal the launcher got, as docker's signal proxy passes it: a payload that
            # traps SIGINT (Ctrl-C) ends its own way. The init drops the copy of a terminal's.
            stop_politely(now, stop.signum)
        if deadline is not None and now >= deadline and not timed_out:
            timed_out = True
            stop_politely(now, signal.SIGTERM)
        if kill_at is not None and now >= kill_at:
            _signal(init_pid, signal.SIGKILL)
            kill_at = None
        waits = [_TICK] + [t - now for t in (deadline if not timed_out else None, kill_at) if t is not None]
        if relay is not None:
            relay.tick()
        for fd, events in poller.poll(max(0.0, min(waits)) * 1000):
            if fd == pidfd:
                exited = True
            elif fd == 0:
                relay.on_input(events)
            elif fd in waiting:
                resume(fd)
            else:
                copy(fd)
    _, status = os.waitpid(a_pid, 0)
    # What the payload wrote just before it ended. Every holder of the terminal's slave has
    # ended with the container's PID 1, so its master reads to EIO; a read with nothing
    # waiting (never seen) ends the copy rather than spin. Output that waits for a reader of
    # the launcher's stdout is passed on as that reader takes it, as `cat` would, unless the
    # run was stopped or timed out: then what the reader has not taken is dropped (the file
    # has it all) and the launcher ends now.
    while open_outputs:
        if waiting:
            if stop.signum is not None or timed_out:
                for fd in waiting.values():
                    movers[fd].drop_out()
                    poller.register(fd, select.POLLIN)
                waiting.clear()
            else:
                room = select.poll()  # the ended container's pipes and pidfd would wake it at once
                for out in waiting:
                    room.register(out, select.POLLOUT)
                for out, _ in room.poll(_TICK * 1000):
                    resume(out)
            continue
        fd = next(iter(open_outputs))
        if not copy(fd) and fd in open_outputs:
            break
    return status, timed_out


