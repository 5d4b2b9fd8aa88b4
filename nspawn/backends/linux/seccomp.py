"""libseccomp (libseccomp.so.2) through ctypes, typed: the calls that compile a filter and
export it as BPF, each raising SeccompError (the call, libseccomp's negative errno code, its
text) on failure.

Only the compile step imports this module: a run whose filter is cached loads the BPF with
prctl (seccomp_filter.load_filter) and never maps libseccomp, so the library costs nothing
per run and need not be present once the cache is warm. The -dev package is never needed:
the constants below are libseccomp's documented ABI (seccomp.h), mostly the kernel's own
SECCOMP_RET_* and AUDIT_ARCH_* values.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, c_char_p, c_int, c_uint, c_uint32, c_uint64, c_void_p

SONAME = "libseccomp.so.2"

# Actions (seccomp.h; the kernel's SECCOMP_RET_* with the data in the low 16 bits)
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_NOTIFY = 0x7FC00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000


def act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


def act_trace(code: int) -> int:
    return 0x7FF00000 | (code & 0xFFFF)


# enum scmp_compare
CMP_NE, CMP_LT, CMP_LE, CMP_EQ, CMP_GE, CMP_GT, CMP_MASKED_EQ = range(1, 8)
COMPARE = {"SCMP_CMP_NE": CMP_NE, "SCMP_CMP_LT": CMP_LT, "SCMP_CMP_LE": CMP_LE, "SCMP_CMP_EQ": CMP_EQ,
           "SCMP_CMP_GE": CMP_GE, "SCMP_CMP_GT": CMP_GT, "SCMP_CMP_MASKED_EQ": CMP_MASKED_EQ}

# enum scmp_filter_attr (the ones nspawn sets)
FLTATR_ACT_BADARCH = 2
FLTATR_CTL_NNP = 3
FLTATR_CTL_OPTIMIZE = 8

NR_SCMP_ERROR = -1  # what the resolve_name calls answer for a name libseccomp does not know


class SeccompError(OSError):
    """A libseccomp call failed: `call` is its name, `code` what it returned (a negative errno,
    or None where it only signals failure, as seccomp_init's NULL), errno/strerror the text."""

    def __init__(self, call: str, code: int | None, text: str | None = None):
        err = -code if code is not None and code < 0 else 0
        super().__init__(err, text or (os.strerror(err) if err else "failed"))
        self.call, self.code = call, code

    def __str__(self) -> str:
        return f"{self.call}: {self.strerror} (code {self.code})"


class LibseccompMissing(SeccompError):
    """libseccomp.so.2 cannot be loaded on this host."""


class _Version(ctypes.Structure):  # struct scmp_version
    _fields_ = [("major", c_uint), ("minor", c_uint), ("micro", c_uint)]


class ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
    _fields_ = [("arg", c_uint), ("op", c_int), ("datum_a", c_uint64), ("datum_b", c_uint64)]


try:
    _lib = ctypes.CDLL(SONAME, use_errno=True)
except OSError as e:  # kept for the first call, so importing never fails on a host without it
    _lib, _missing = None, str(e)
# seccomp_syscall_resolve_num_arch returns a string malloc'd by the libc libseccomp links,
# which is this process's: free it with that libc's free.
_free = ctypes.CDLL(None).free
_free.restype, _free.argtypes = None, [c_void_p]


def _negative_errno(name):
    def errcheck(result, _func, args):
        if result < 0:
            raise SeccompError(name, result)
        return result
    return errcheck


def _non_null(name):
    def errcheck(result, _func, args):
        if not result:
            raise SeccompError(name, None, "returned NULL (out of memory or an invalid action)")
        return result
    return errcheck


def _plain(_name):
    # A lookup whose "not found" value is an answer, not a failure (resolve_name's -1, the
    # arch resolver's 0): the caller reads it.
    def errcheck(result, _func, args):
        return result
    return errcheck


def _function(name: str, restype, argtypes, check):
    if _lib is None:
        def missing(*_args):
            raise LibseccompMissing(name, None, f"{SONAME} cannot be loaded: {_missing}")
        return missing
    func = getattr(_lib, name)
    func.restype, func.argtypes, func.errcheck = restype, argtypes, check(name)
    return func


_version = _function("seccomp_version", POINTER(_Version), [], _non_null)
seccomp_init = _function("seccomp_init", c_void_p, [c_uint32], _non_null)
seccomp_release = _function("seccomp_release", None, [c_void_p], _plain)
seccomp_arch_native = _function("seccomp_arch_native", c_uint32, [], _plain)
seccomp_arch_resolve_name = _function("seccomp_arch_resolve_name", c_uint32, [c_char_p], _plain)
seccomp_arch_exist = _function("seccomp_arch_exist", c_int, [c_void_p, c_uint32], _plain)  # 0, or -EEXIST if absent
seccomp_arch_add = _function("seccomp_arch_add", c_int, [c_void_p, c_uint32], _negative_errno)
seccomp_attr_set = _function("seccomp_attr_set", c_int, [c_void_p, c_int, c_uint32], _negative_errno)
seccomp_syscall_resolve_name = _function("seccomp_syscall_resolve_name", c_int, [c_char_p], _plain)
seccomp_syscall_resolve_name_arch = _function("seccomp_syscall_resolve_name_arch", c_int, [c_uint32, c_char_p], _plain)
_resolve_num_arch = _function("seccomp_syscall_resolve_num_arch", c_void_p, [c_uint32, c_int], _plain)
seccomp_rule_add_array = _function("seccomp_rule_add_array", c_int,
                                   [c_void_p, c_uint32, c_int, c_uint, POINTER(ArgCmp)], _negative_errno)
seccomp_export_bpf = _function("seccomp_export_bpf", c_int, [c_void_p, c_int], _negative_errno)


def version() -> tuple[int, int, int]:
    v = _version().contents
    return v.major, v.minor, v.micro


def library_path() -> str | None:
    """The file this process mapped as libseccomp, read from /proc/self/maps (the cache keys on
    its identity, so that an upgraded libseccomp recompiles)."""
    if _lib is None:
        return None
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.rstrip("\n").partition("/")[2]
            if path and "libseccomp.so" in path:
                return "/" + path
    return None


def syscall_name(arch: int, number: int) -> str | None:
    """The name libseccomp gives `number` on `arch`, or None if it knows none."""
    pointer = _resolve_num_arch(arch, number)
    if not pointer:
        return None
    try:
        return ctypes.string_at(pointer).decode()
    finally:
        _free(pointer)


def syscall_number(name: str, arch: int | None = None) -> int | None:
    """The number of `name` on `arch` (native if None) as libseccomp resolves it: negative for a
    pseudo-number (a call of another arch of the filter, which libseccomp translates); None if
    libseccomp does not know the name at all."""
    raw = name.encode()
    n = seccomp_syscall_resolve_name(raw) if arch is None else seccomp_syscall_resolve_name_arch(arch, raw)
    return None if n == NR_SCMP_ERROR else n


def arch_token(name: str) -> int | None:
    """libseccomp's token (the AUDIT_ARCH_* value) for an arch name such as "x86_64", or None."""
    return seccomp_arch_resolve_name(name.encode()) or None


class Filter:
    """One scmp_filter_ctx, released on close (a context manager)."""

    def __init__(self, default_action: int):
        self.ctx = seccomp_init(default_action)

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.ctx:
            seccomp_release(self.ctx)
            self.ctx = None

    def has_arch(self, arch: int) -> bool:
        return seccomp_arch_exist(self.ctx, arch) == 0

    def add_arch(self, arch: int) -> None:
        seccomp_arch_add(self.ctx, arch)

    def set_attr(self, attr: int, value: int) -> None:
        seccomp_attr_set(self.ctx, attr, value)

    def add_rule(self, action: int, number: int, conditions=()) -> None:
        """conditions: (arg index, COMPARE op, datum_a, datum_b) tuples, ANDed."""
        array = (ArgCmp * len(conditions))(*(ArgCmp(i, op, a & (2**64 - 1), b & (2**64 - 1))
                                              for i, op, a, b in conditions))
        seccomp_rule_add_array(self.ctx, action, number, len(conditions), array)

    def export_bpf(self) -> bytes:
        """The filter as the kernel's sock_filter array, through a memfd (a pipe's buffer could
        be smaller than a large filter and block the single-threaded write)."""
        fd = os.memfd_create("nspawn-seccomp", os.MFD_CLOEXEC)
        try:
            seccomp_export_bpf(self.ctx, fd)
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
