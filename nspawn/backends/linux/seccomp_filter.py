"""The payload's seccomp filter: compiled once per content with libseccomp, cached as BPF, and
loaded from the cache by prctl just before exec.

A run asks `filter_for(setting, kept, cache_dir)`: the cache entry is named by a hash of what
decides the program (the profile's bytes, the kept capabilities, the machine, the kernel
release, which decides `minKernel`, and the identity of the libseccomp file that compiled it:
its path, device, inode, size and mtime, so an upgraded libseccomp recompiles). A hit reads
one file and checks its digest; it imports neither json nor libseccomp, and maps no
libseccomp (the tests read /proc/self/maps). A miss, or an entry that fails its checks, is
compiled (seccomp_profile reads the profile, seccomp compiles it) and written atomically.

Unknown system calls. A name the installed libseccomp does not know cannot be put in a rule:
in an ALLOW rule it is skipped (and named in `skipped`); in a rule of another action it is
skipped too when the default action refuses anyway, and is an error when the default allows
(the refusal would silently not happen). Then, as runc does and for the same reason (a libc
probing a newer call, clone3 or faccessat2, must see ENOSYS and fall back, not EPERM), a stub
in front of libseccomp's program answers ENOSYS for every number the installed libseccomp
cannot name on the calling architecture, unless the number is one the profile's rules
resolved: the gaps of its table and everything above the highest number it knows (runc's
stub covers only the numbers above the highest one in the profile). Where the profile's
default action allows, there is no stub.

`load_filter` sets PR_SET_NO_NEW_PRIVS (the kernel refuses a filter without it to a process
lacking CAP_SYS_ADMIN, which the payload has dropped) and PR_SET_SECCOMP; `prepare` builds the
sock_fprog before fork, so that the child only makes the two calls.
"""

from __future__ import annotations

import ctypes
import os
import struct

from nspawn.backends.linux import libc
from nspawn.config.load import sha256  # hashlib's, without OpenSSL's start-up on a hit
from nspawn.records import record

DEFAULT = "default"
UNCONFINED = "unconfined"
PROFILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profiles")
DEFAULT_PROFILE = os.path.join(PROFILES, "default.json")

_MAGIC = b"nspawnS1"  # the entry format; a change of it or of the stub is a new magic
_LIBRARY_NOTE = "libseccomp.path"  # in the cache: the libseccomp file the entries were compiled with
_MAX_INSTRUCTIONS = 4096  # BPF_MAXINSNS

ENOSYS = 38


@record
class CachedFilter:
    bpf: bytes
    hit: bool
    entry: str | None  # the cache file; None if it could not be written
    source: str  # the profile's path
    skipped: tuple = ()  # on a compile: names libseccomp does not know, left out


@record
class Compiled:
    bpf: bytes
    skipped: tuple
    arches: tuple  # libseccomp arch names in the filter
    library: str  # libseccomp's version and the file it was loaded from


# ------------------------------------------------------------------ the run path: the cache

def profile_path(setting: str) -> str | None:
    """The profile file for a config's `seccomp` value; None for unconfined."""
    if setting == UNCONFINED:
        return None
    return DEFAULT_PROFILE if setting in (DEFAULT, None) else setting


def filter_for(setting: str, kept, cache_dir: str) -> CachedFilter | None:
    """The BPF for `setting` (default, unconfined or a profile's path) and the kept capabilities
    (a mask such as plan.capability_mask, or names), from `cache_dir` or compiled into it."""
    path = profile_path(setting)
    if path is None:
        return None
    data = _read_profile(path)
    caps = _capability_key(kept)
    machine, release = os.uname().machine, os.uname().release
    entry = _entry_path(cache_dir, data, caps, machine, release)
    if entry is not None:
        bpf = _read_entry(entry)
        if bpf is not None:
            return CachedFilter(bpf, True, entry, path)
    compiled = compile_profile(data, path, kept)
    entry = _store(cache_dir, compiled, data, caps, machine, release)
    return CachedFilter(compiled.bpf, False, entry, path, compiled.skipped)


def _read_profile(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        from nspawn.backends.linux.seccomp_profile import ProfileError
        raise ProfileError(path, "", f"cannot read the seccomp profile: {e.strerror}") from None


def _capability_key(kept) -> str:
    if isinstance(kept, int):
        return f"mask:{kept:x}"  # no name table needed on the hit path
    from nspawn.backends.linux.seccomp_profile import capability_names
    return "names:" + ",".join(capability_names(kept))


def _library_identity(cache_dir: str) -> str | None:
    try:
        with open(os.path.join(cache_dir, _LIBRARY_NOTE), "rb") as f:
            path = os.fsdecode(f.read())
        st = os.stat(path)
    except OSError:
        return None
    return f"{path}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _entry_path(cache_dir: str, data: bytes, caps: str, machine: str, release: str) -> str | None:
    library = _library_identity(cache_dir)
    if library is None:
        return None
    key = sha256(_MAGIC + b"\0" + sha256(data).digest() + b"\0"
                 + "\0".join((caps, machine, release, library)).encode()).hexdigest()
    return os.path.join(cache_dir, key + ".bpf")


def _read_entry(entry: str) -> bytes | None:
    """The program in `entry`, or None if it is absent, not ours (owner, mode) or damaged."""
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        # A file another user could have written is no filter of ours.
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_size > 64 + 8 * _MAX_INSTRUCTIONS:
            return None
        blob = os.read(fd, st.st_size + 1)
    finally:
        os.close(fd)
    head, digest, bpf = blob[:8], blob[8:40], blob[40:]
    if head != _MAGIC or not bpf or len(bpf) % 8 or sha256(bpf).digest() != digest:
        return None
    return bpf


def _store(cache_dir: str, compiled: Compiled, data: bytes, caps: str, machine: str, release: str) -> str | None:
    """Writes the entry (and the note of the libseccomp file) atomically; None if the cache
    cannot be written: the run still gets its filter, the next one compiles again."""
    path = compiled.library.partition(" ")[2]
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        _write_atomically(os.path.join(cache_dir, _LIBRARY_NOTE), os.fsencode(path))
        entry = _entry_path(cache_dir, data, caps, machine, release)
        if entry is None:
            return None
        _write_atomically(entry, _MAGIC + sha256(compiled.bpf).digest() + compiled.bpf)
        return entry
    except OSError:
        return None


def _write_atomically(path: str, blob: bytes) -> None:
    import threading  # a batch compiles on worker threads: one temporary name per thread
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, blob)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)  # a concurrent run reads the old entry or the new one, never half


# ------------------------------------------------------------------ the run path: loading

class _SockFprog(ctypes.Structure):  # struct sock_fprog (linux/filter.h)
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Prepared:
    """A program ready for prctl: its buffer and the sock_fprog pointing at it, kept alive."""

    __slots__ = ("buffer", "program", "address")

    def __init__(self, bpf: bytes):
        if not bpf or len(bpf) % 8 or len(bpf) // 8 > _MAX_INSTRUCTIONS:
            raise ValueError(f"not a BPF program: {len(bpf)} bytes")
        self.buffer = ctypes.create_string_buffer(bytes(bpf), len(bpf))
        self.program = _SockFprog(len(bpf) // 8, ctypes.addressof(self.buffer))
        self.address = ctypes.addressof(self.program)


def prepare(bpf: bytes) -> Prepared:
    return Prepared(bpf)


def load_filter(bpf) -> None:
    """Installs the filter on this thread (BPF bytes, or a Prepared made before fork); for the
    container's last process just before exec. Raises OSError naming the prctl."""
    program = bpf if isinstance(bpf, Prepared) else Prepared(bpf)
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    libc.prctl(libc.PR_SET_SECCOMP, libc.SECCOMP_MODE_FILTER, program.address)


# ------------------------------------------------------------------ compiling (libseccomp)

def compile_profile(data: bytes, source: str, kept) -> Compiled:
    """The BPF of the profile in `data` for this machine and kernel and the kept capabilities."""
    from nspawn.backends.linux import seccomp as lib
    from nspawn.backends.linux.seccomp_profile import ProfileError, docker_arch, kernel_version, parse

    uname = os.uname()
    profile = parse(data, source, docker_arch(uname.machine), kept, kernel_version(uname.release))
    version = ".".join(map(str, lib.version()))
    default = _action(lib, profile.default_action, profile.default_number)
    refuses = default not in (lib.ACT_ALLOW, lib.ACT_LOG)
    skipped, used, arches = [], set(), []
    with lib.Filter(default) as ctx:
        native = lib.seccomp_arch_native()
        tokens = [native]
        for name in profile.arches:
            token = lib.arch_token(name.removeprefix("SCMP_ARCH_").lower())
            if token is None:
                continue  # an arch this libseccomp does not know cannot run here either
            if token not in tokens:
                ctx.add_arch(token)
                tokens.append(token)
        # Binary-tree dispatch: the default profile allows ~370 calls, a linear filter would test
        # them one by one on every system call of the payload.
        ctx.set_attr(lib.FLTATR_CTL_OPTIMIZE, 2)
        for rule in profile.rules:
            action = _action(lib, rule.action, rule.number)
            if action == default:
                continue  # libseccomp refuses such a rule (EACCES); it would change nothing
            conditions = [(i, lib.COMPARE[op], a, b) for i, op, a, b in rule.conditions]
            for name in rule.names:
                number = lib.syscall_number(name)
                if number is None:
                    if action == lib.ACT_ALLOW or refuses:
                        skipped.append(name)
                        continue
                    raise ProfileError(source, f"$.syscalls[{rule.entry}]",
                                       f"{name} is unknown to libseccomp {version}, so it cannot be refused")
                try:
                    ctx.add_rule(action, number, conditions)
                except lib.SeccompError as e:
                    raise ProfileError(source, f"$.syscalls[{rule.entry}]",
                                       f"libseccomp {version} refused the rule for {name}: {e.strerror}") from None
                used.add(name)
        program = ctx.export_bpf()
    if refuses:
        program = _enosys_stub(_unknown_ranges(lib, tokens, used)) + program
    if len(program) // 8 > _MAX_INSTRUCTIONS:
        raise ProfileError(source, "", f"the filter has {len(program) // 8} instructions, more than the kernel's {_MAX_INSTRUCTIONS}")
    names = tuple(_arch_name(lib, t) for t in tokens)
    return Compiled(program, tuple(sorted(set(skipped))), names, f"{version} {lib.library_path() or lib.SONAME}")


def _action(lib, name: str, number: int | None) -> int:
    if name == "SCMP_ACT_ERRNO":
        return lib.act_errno(number)
    if name == "SCMP_ACT_TRACE":
        return lib.act_trace(number)
    return {"SCMP_ACT_KILL": lib.ACT_KILL_THREAD, "SCMP_ACT_KILL_THREAD": lib.ACT_KILL_THREAD,
            "SCMP_ACT_KILL_PROCESS": lib.ACT_KILL_PROCESS, "SCMP_ACT_TRAP": lib.ACT_TRAP,
            "SCMP_ACT_LOG": lib.ACT_LOG, "SCMP_ACT_ALLOW": lib.ACT_ALLOW}[name]


def _arch_name(lib, token: int) -> str:
    for name in ("x86_64", "x86", "x32", "aarch64", "arm", "ppc64le", "ppc64", "ppc", "s390x", "s390",
                 "riscv64", "mips", "mipsel", "mips64", "mipsel64", "mips64n32", "mipsel64n32",
                 "parisc", "parisc64", "loongarch64"):
        if lib.arch_token(name) == token:
            return name
    return hex(token)


_X32_BIT = 0x40000000
_U32 = 0xFFFFFFFF


def _unknown_ranges(lib, tokens: list, used: set) -> dict:
    """Per audit arch as the kernel reports it (x32 is x86_64 with the x32 bit in the number),
    the (low, high) ranges of numbers libseccomp cannot name, ascending."""
    x86_64, x32 = lib.arch_token("x86_64"), lib.arch_token("x32")
    windows = {}
    for token in tokens:
        if token == x32:
            kernel_arch, low, high = x86_64, _X32_BIT, _U32
        elif token == x86_64:
            kernel_arch, low, high = x86_64, 0, _X32_BIT - 1
        else:
            kernel_arch, low, high = token, 0, _U32
        known = _known_numbers(lib, token, low)
        # A call the profile resolved is known even outside the scanned window (ARM's private
        # calls at 0xf0000 and up).
        known.update(n for n in (lib.syscall_number(name, token) for name in used) if n is not None and n >= 0)
        ranges, previous = windows.setdefault(kernel_arch, []), low - 1
        for n in sorted(k for k in known if low <= k <= high):
            if n > previous + 1:
                ranges.append((previous + 1, n - 1))
            previous = n
        if previous < high:
            ranges.append((previous + 1, high))
    return {arch: sorted(ranges) for arch, ranges in windows.items()}


def _known_numbers(lib, token: int, start: int) -> set:
    """The numbers libseccomp names on `token` from `start`: scanned until 1024 unnamed in a row
    after the first named (tables have holes, none that long), 8192 at most (MIPS starts at 4000)."""
    known, gap, n = set(), 0, start
    while n < start + 8192 and not (known and gap >= 1024):
        if lib.syscall_name(token, n) is not None:
            known.add(n)
            gap = 0
        else:
            gap += 1
        n += 1
    return known


# classic BPF opcodes (linux/bpf_common.h)
_LD_W_ABS, _JA, _JEQ, _JGT, _JGE, _RET = 0x20, 0x05, 0x15, 0x25, 0x35, 0x06
_SECCOMP_RET_ERRNO = 0x00050000


def _enosys_stub(ranges: dict) -> bytes:
    """BPF that returns ENOSYS for a number in one of `ranges` of its arch and otherwise goes
    on to the program that follows (libseccomp's, which reloads what it tests)."""
    code = []  # [opcode, jt, jf, k], jumps as absolute targets until the end

    def emit(op, k=0, jt=None, jf=None):
        code.append([op, jt, jf, k])
        return len(code) - 1

    FILTER = "filter"
    emit(_LD_W_ABS, 4)  # seccomp_data.arch
    dispatch = []
    for arch in ranges:
        emit(_JEQ, arch, jt=len(code) + 1, jf=len(code) + 2)
        dispatch.append(emit(_JA, None))
    emit(_JA, FILTER)
    for (arch, spans), at in zip(ranges.items(), dispatch):
        code[at][3] = len(code)
        emit(_LD_W_ABS, 0)  # seccomp_data.nr
        jumps_out, jumps_enosys = [], []
        for low, high in spans:
            if low > 0:
                jumps_out.append(emit(_JGE, low, jt=len(code) + 1))  # below this span: no later one either
            if high == _U32:
                jumps_enosys.append(emit(_JA, None))
                break
            jumps_enosys.append(emit(_JGT, high, jt=len(code) + 1))
        out = emit(_JA, FILTER)
        enosys = emit(_RET, _SECCOMP_RET_ERRNO | ENOSYS)
        for at_ in jumps_out:
            code[at_][2] = out
        for at_ in jumps_enosys:
            if code[at_][0] == _JA:
                code[at_][3] = enosys
            else:
                code[at_][2] = enosys
    end = len(code)
    blob = bytearray()
    for i, (op, jt, jf, k) in enumerate(code):
        if op == _JA:
            k = (end if k == FILTER else k) - i - 1
            jt = jf = 0
        elif op in (_JEQ, _JGT, _JGE):
            jt, jf = jt - i - 1, jf - i - 1
            if not (0 <= jt <= 255 and 0 <= jf <= 255):
                raise ValueError("seccomp stub: a conditional jump beyond 255 instructions")
        else:
            jt = jf = 0
        blob += struct.pack("=HBBI", op, jt, jf, k)
    return bytes(blob)
