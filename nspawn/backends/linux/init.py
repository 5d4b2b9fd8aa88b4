"""The container's processes, forked from the launcher (no interpreter start, no imports), or
in a batch from its fork server (forkserver.py), which makes A the launcher's child all the same:

    launcher ─ A: dies with the launcher, makes a session of its own (no controlling
                terminal), unshares the namespaces, forks B
                └ B: PID 1 of the new PID namespace, in the container's cgroups and a cgroup
                     namespace rooted at them; builds the
                     filesystem (and the payload's terminal, when it has one: a pseudo-terminal
                     of the container's own devpts, whose master goes to the launcher), forks C,
                     forwards signals to it, reaps orphans, reports C's wait status and exits
                     with it
                   └ C: makes that terminal its controlling one in a session of its own, trims
                        its privileges and execs the payload

Setup failures travel to the launcher on the report pipe as one line "E<exit code> <step>:
<message>" ("S<signal>" asks the launcher to signal itself, for tests); the pipe is close-on-exec, so its end of file after A's "P<pid of B>" line means
the payload was exec'd (as runc does). B writes C's raw wait status to the status pipe. With
network "nat", B waits before forking C for one byte on the ready pipe: the launcher writes it
once it has made the container's network from outside, on hearing B's pid.

A launcher may run containers from several threads at once (`nspawn batch`). The fork copies
only the forking thread, so nothing here takes a lock another thread may hold: no imports, no
logging, only os calls, ctypes functions bound at import and files opened afresh. A closes at
once every descriptor that is not its own run's, since a copy of another run's pipe would hold
that run's end of file back until this container ended. PR_SET_PDEATHSIG fires when the
launcher *thread* that forked A ends, so that thread must wait for its run to finish (it does).
"""

from __future__ import annotations

import errno
import os
import select
import _signal as signal  # its C module: the signal package imports enum, 2 ms of every run
import sys

from nspawn import exitcodes
from nspawn.backends.linux import cgroups, etc_files, libc, mounts, seccomp_filter, users, userns
from nspawn.backends.linux.plan import LinuxPlan
from nspawn.records import record
from nspawn.result import error_text

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGWINCH, signal.SIGCONT)
_step = "fork"  # the setup step this forked process is at: each child has its own copy

# Python ignores these at start-up and ignored signals survive execve; the payload gets defaults.
_RESET = FORWARDED + (signal.SIGPIPE, signal.SIGXFSZ)
_WAITED = FORWARDED + (signal.SIGCHLD,)  # what the container's init waits for


@record
class Terminal:
    """The payload's pseudo-terminal, made by init from the container's own devpts."""

    channel: object  # init's end of a socket pair: the terminal's master goes to the launcher on it
    size: bytes  # struct winsize of the launcher's terminal, or zeros
    set_controlling: int  # TIOCSCTTY and TIOCSWINSZ, from the launcher's termios module
    set_size: int


@record
class Launch:
    """What the forked processes need, prepared by the launcher before forking."""

    plan: LinuxPlan
    launcher_pid: int
    cgroup_v2: str | None  # v2: the group B is forked into
    cgroup_joins: list[str]  # the files B writes "0" to, to join its groups when not forked into them
    cgroup_view: list[tuple[str, str, str]]  # the hierarchies mounted read-only at /sys/fs/cgroup
    scratch: str  # holds the overlay's layers (mounts.enter_root)
    lower_tree: int | None  # the lower layer as a detached mount (hostpaths.layer), id-mapped with private users; None: an image's
    hide: tuple[str, ...] | None  # with the host view, nspawn's own paths it hides too (hostview.prepare)
    binds: list[tuple[int, str, str, bool, bool]]  # (source as a detached mount, its host path, container path, read only, is a file)
    report_w: int
    status_w: int
    output_w: tuple[int, int] | None  # payload's stdout and stderr pipes, when the launcher copies them
    oom_score_adj: str  # the launcher's, given back to the payload
    cap_last: int
    max_fd: int
    fail_at: tuple[str, str] | None  # test seam: (step, "" to fail, or a signal name to send the launcher)
    seccomp: bytes | None = None  # the payload's BPF program, loaded last before exec; None: unconfined
    tty: Terminal | None = None
    etc: tuple = ()  # etc_files.Write: the host's resolvers and zone for the container's /etc
    userns_fd: int | None = None  # private users: the user namespace A joins (userns.py)
    # network "nat": the pipe on which the launcher says (one byte) that the container's network,
    # made from outside once init exists, is ready; init waits for it before forking the payload.
    network_ready: int = -1

    def at(self, step: str) -> None:
        global _step
        _step = step
        # From inside the new PID namespace the launcher cannot be signalled; it signals itself.
        fault_point(self.fail_at, step, lambda signum: os.write(self.report_w, b"S%d\n" % signum))

    def report(self, code: int, message: str) -> None:
        os.write(self.report_w, f"E{code} {_step}: {message}\n".encode(errors="replace"))


def fault_point(fail_at: tuple[str, str] | None, step: str, signal_launcher) -> None:
    """Fault injection for the tests (NSPAWN_FAIL_AT): fail at `step`, or have the launcher get
    a signal there."""
    if fail_at and fail_at[0] == step:
        if not fail_at[1]:
            raise OSError(errno.EIO, f"failure injected at {step}")
        signal_launcher(getattr(signal, fail_at[1]))


def _set_oom_score_adj(value: str) -> None:
    """Best effort: lowering it takes CAP_SYS_RESOURCE, which a confined root may lack."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(value)
    except PermissionError:
        pass


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def close_all_but(keep: tuple[int, ...], max_fd: int) -> None:
    """Close every descriptor from 3 up except those in `keep`."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max_fd)


def fail(launch: Launch, e: BaseException) -> None:
    code = getattr(e, "exit_code", exitcodes.LAUNCHER)  # a user's mistake found here says its own
    try:
        launch.report(code, error_text(e))
    finally:
        os._exit(code)


# The fork server's way of making A (forkserver.py), while one serves this launcher: A is then
# forked from the server's small process instead of this one. Returns A's pid, or None when the
# server cannot (it has ended), and A is forked here.
serving = None


def start(launch: Launch) -> int:
    """Make A; returns its pid (in the launcher), a child of the launcher either way."""
    if serving is not None and launch.tty is None:  # a terminal's channel is a socket object, not marshal's
        pid = serving(launch)
        if pid is not None:
            return pid
    pid = os.fork()
    if pid == 0:
        become_a(launch)
    return pid


def become_a(launch: Launch) -> None:
    """Run A in this newly forked process; never returns."""
    try:
        _stage_a(launch)
    except BaseException as e:  # a child must never return into the launcher's code
        fail(launch, e)


def own_fds(launch: Launch) -> tuple[int, ...]:
    """The launcher's descriptors A keeps: those `launch` names."""
    held = (launch.lower_tree, *(b[0] for b in launch.binds), launch.userns_fd,
            *((launch.tty.channel.fileno(),) if launch.tty else ()))
    return (launch.report_w, launch.status_w, *(launch.output_w or ()), *(fd for fd in held if fd is not None),
            *_ready(launch))


def _stage_a(launch: Launch) -> None:
    close_all_but(own_fds(launch), launch.max_fd)
    # A session of its own, with no controlling terminal: the container cannot open /dev/tty
    # to type into the host's shell (TIOCSTI), and kill(0, ...) reaches no launcher.
    os.setsid()
    for s in FORWARDED:
        signal.signal(s, signal.SIG_IGN)  # the launcher, which stops the container, gets them too
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != launch.launcher_pid:
        os._exit(125)  # the launcher died before PDEATHSIG was armed
    # B, which inherits this, is a fork of the launcher with its interpreter's pages resident:
    # the memory limit's OOM killer could pick it over the payload and lose the payload's exit
    # status (A is outside the container's groups).
    _set_oom_score_adj("-1000")
    # The overlay's layers are made in the scratch dir, reached as the working directory, which
    # the new mount namespace carries over to its own copy of the mount: with private users its
    # parent is closed to the range's ids.
    os.chdir(launch.scratch)
    private = launch.userns_fd is not None
    if private:
        launch.at("private-users")
        # The groups' files are the host root's, which the namespace's root may not write: A
        # joins them before, and B, its fork, starts in them.
        _join(launch.cgroup_joins)
        userns.enter(launch.userns_fd)
    launch.at("unshare")
    flags = 0
    for name in launch.plan.namespaces:
        flags |= libc.NAMESPACE_FLAGS[name]
    libc.unshare(flags)
    self_fd = os.pidfd_open(os.getpid())  # lets B see whether A died before B armed PDEATHSIG
    launch.at("fork-init")
    pid, in_groups = _fork_init(None if private else launch.cgroup_v2)
    if pid == 0:
        try:
            _stage_b(launch, self_fd, in_groups or private)
        except BaseException as e:
            fail(launch, e)
    os.write(launch.report_w, b"P%d\n" % pid)
    for fd in (*own_fds(launch), self_fd):
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    os._exit(_exit_code(status))


def _ready(launch: Launch) -> tuple[int, ...]:
    return (launch.network_ready,) if launch.network_ready >= 0 else ()


def _fork_init(group: str | None) -> tuple[int, bool]:
    """Fork B: (its pid, or 0 in B; whether B starts in the container's cgroups). On v2, B is
    forked into `group` (clone3), where v2 offers no cheap move (see _join). Without clone3
    (before Linux 5.7; or refused by a seccomp filter, which may answer ENOSYS or EPERM; or,
    before 5.7, EINVAL when the group's descriptor is 0) B joins as on v1."""
    if group is None:
        return os.fork(), False
    fd = os.open(group, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return libc.fork_into_cgroup(fd), True
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.E2BIG, errno.EPERM, errno.EINVAL):
            raise
    finally:
        os.close(fd)  # in B too: the container must hold nothing of the host's cgroup tree
    return os.fork(), False


def _join(paths: list[str]) -> None:
    """Move this process, which has one thread, into the groups. Writing "0" (itself) to a v1
    `tasks` file moves one thread, so the kernel skips its thread-group lock, whose first taking
    after a quiet spell waits out an RCU grace period (5-20 ms here). Writing a pid, or to
    cgroup.procs, takes that lock: v2 offers nothing else, hence clone3 there."""
    for path in paths:
        cgroups.write(path, "0")


def _stage_b(launch: Launch, parent_fd: int, in_groups: bool) -> None:
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([parent_fd], [], [], 0)[0]:
        os._exit(125)
    os.close(parent_fd)
    launch.at("join-cgroups")
    if not in_groups:
        _join(launch.cgroup_joins)
    # Rooted at the groups just joined: the payload's /proc/self/cgroup and /sys/fs/cgroup show
    # its own groups as "/", never the host's tree.
    libc.unshare(libc.CLONE_NEWCGROUP)
    plan = launch.plan
    launch.at("mount-root")
    mounts.enter_root(plan.lower_layers or launch.lower_tree, plan.scratch_bytes, launch.hide, userxattr=plan.private_users)
    if launch.lower_tree is not None:
        os.close(launch.lower_tree)
    launch.at("etc-files")
    etc_files.install(launch.etc, plan.hostname)
    launch.at("mount-system")
    mounts.mount_system(plan.tmp_size, plan.shm_size, plan.private_users)
    mounts.mask_system()
    mounts.cgroup_view(launch.cgroup_view)
    terminal = None
    if launch.tty is not None:
        launch.at("terminal")
        terminal = _make_terminal(launch.tty)
    for target, size in plan.tmpfs:
        mounts.tmpfs(target, size)
    launch.at("bind-mounts")
    for tree, source, target, read_only, is_file in launch.binds:
        mounts.bind(tree, source, target, read_only, is_file)
        os.close(tree)
    launch.at("detach-host-root")
    mounts.leave_old_root()
    launch.at("user")
    account = users.lookup(plan.user)  # in the container's own files, as the payload will see them
    launch.at("hostname")
    libc.sethostname(plan.hostname)
    if "net" in plan.namespaces:
        launch.at("loopback")
        libc.interface_up("lo")

    if launch.network_ready >= 0:
        launch.at("network")
        ready = os.read(launch.network_ready, 1)
        os.close(launch.network_ready)
        if not ready:
            raise OSError(errno.ENETDOWN, "the launcher did not finish the container's network")

    # Signals are taken one at a time with their origin (sigwaitinfo), never by a handler: a
    # handler could run after the payload is reaped and find no process to pass its signal to.
    # Blocked before the fork, none is lost before the loop; the payload unblocks them.
    program = seccomp_filter.prepare(launch.seccomp) if launch.seccomp is not None else None
    signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)
    launch.at("fork-payload")
    payload = os.fork()
    if payload == 0:
        try:
            _stage_c(launch, account, terminal, program)
        except BaseException as e:
            fail(launch, e)
    for fd in (launch.report_w, *(launch.output_w or ()), *((terminal,) if terminal is not None else ())):
        os.close(fd)  # init holds nothing of the terminal: the payload's end is the last
    status = _serve(payload)
    os.write(launch.status_w, status.to_bytes(4, "little"))
    os._exit(_exit_code(status))


def _serve(payload: int) -> int:
    """As PID 1: pass signals on to the payload and reap every orphan until the payload itself
    exits; returns its wait status. The container has a session of its own, so no terminal
    signals it: what comes, the launcher sent once, and it is passed on once."""
    while True:
        info = signal.sigwaitinfo(_WAITED)
        signum = info.si_signo
        if signum == signal.SIGCHLD:
            while True:  # one SIGCHLD may stand for several children
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    pid = 0
                if pid == payload:
                    return status
                if pid == 0:
                    break
        else:
            os.kill(payload, signum)


def _make_terminal(tty: Terminal) -> int:
    """A pseudo-terminal from the container's devpts, sized as the launcher's, bound at
    /dev/console too (as systemd-nspawn does); its master goes to the launcher, which relays
    it. Returns the slave."""
    master, slave = os.openpty()  # /dev/ptmx here is the container's own pts/ptmx
    libc.ioctl(master, tty.set_size, tty.size)
    console = "/dev/console"
    os.close(os.open(console, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    libc.mount(os.ttyname(slave), console, None, libc.MS_BIND)
    # SOL_SOCKET, SCM_RIGHTS: socket.send_fds's message, without importing socket here
    tty.channel.sendmsg([b"T"], [(1, 1, master.to_bytes(4, sys.byteorder))])
    tty.channel.close()
    os.close(master)
    return slave


def _stage_c(launch: Launch, account: users.Account, terminal: int | None, program) -> None:
    for s in _RESET:
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())  # the mask survives execve too
    plan = launch.plan
    launch.at("exec-prepare")
    if terminal is not None:
        os.setsid()  # a session of the payload's own, which the terminal controls
        libc.ioctl(terminal, launch.tty.set_controlling, None)
        for fd in (0, 1, 2):
            os.dup2(terminal, fd)
    elif launch.output_w:
        os.dup2(launch.output_w[0], 1)
        os.dup2(launch.output_w[1], 2)
    # Only stdio and the report pipe cross into the container: an inherited descriptor of a
    # host directory would be a way out.
    close_all_but((launch.report_w,), launch.max_fd)
    _set_oom_score_adj(launch.oom_score_adj)
    if plan.limits.cpus:
        os.sched_setaffinity(0, plan.limits.cpus)
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    keep = plan.capability_mask
    for cap in range(launch.cap_last + 1):
        if not keep >> cap & 1:
            libc.prctl(libc.PR_CAPBSET_DROP, cap)
    users.become(account)
    libc.capset(keep, keep, keep)
    try:
        os.chdir(plan.cwd)  # as the user: a directory it may not enter is refused as it would be later
    except OSError as e:
        raise OSError(e.errno, f"working directory {plan.cwd}: {e.strerror}") from None
    libc.new_session_keyring()  # the launcher's (its login's keys) stays out of reach
    if program is not None:
        seccomp_filter.load_filter(program)  # last: what follows is exec, which the filter allows
    launch.at("exec")
    env = users.environment(account, dict(plan.env))
    try:
        if "/" in plan.executable:
            os.execve(plan.executable, plan.argv, env)
        os.execvpe(plan.executable, plan.argv, env)
    except OSError as e:
        code = 127 if e.errno in (errno.ENOENT, errno.ENOTDIR) else 126
        what = "was not found in the container" if code == 127 else f"cannot be executed: {e.strerror}"
        launch.report(code, f"{plan.executable} {what}")
        os._exit(code)
