"""Docker-format seccomp profiles, pure: the profile's bytes → the rules that apply to a payload
keeping a given set of capabilities, on a given architecture and kernel.

What applies follows moby's reading of the format: an entry's `includes` must all hold (every
listed capability kept, the architecture listed, the kernel at least `minKernel`) and none of
its `excludes` may (no listed capability kept, the architecture not listed); `archMap` adds
the sub-architectures of the native one (x86 and x32 on amd64); an entry whose `args` test one
argument twice becomes one rule per condition (OR), otherwise one rule with all of them (AND),
as runc adds them. Nothing here knows libseccomp: seccomp_filter turns the names into numbers.

A malformed profile is a ProfileError: a ConfigError whose one Problem names the file, the
JSON path of the entry and what is wrong, so the CLI reports it like a config file's.
"""

from __future__ import annotations

import json

from nspawn.errors import ConfigError, Problem
from nspawn.records import record

# The capability names by number (linux/capability.h), for a mask such as a plan's
# capability_mask; profiles name capabilities, the backend keeps a mask.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

# Actions a profile may name, and whether they carry a number (errnoRet). SCMP_ACT_NOTIFY is
# refused: it needs a supervisor holding the listener, which nspawn does not run.
ACTIONS = {"SCMP_ACT_KILL": False, "SCMP_ACT_KILL_THREAD": False, "SCMP_ACT_KILL_PROCESS": False,
           "SCMP_ACT_TRAP": False, "SCMP_ACT_ERRNO": True, "SCMP_ACT_TRACE": True,
           "SCMP_ACT_LOG": False, "SCMP_ACT_ALLOW": False}
COMPARISONS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
               "SCMP_CMP_MASKED_EQ")
EPERM = 1

# uname's machine → the architecture names of the format's includes/excludes (moby's names)
# and the SCMP_ARCH_* of its archMap.
_MACHINES = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x",
             "riscv64": "riscv64", "mips64": "mips64", "loongarch64": "loong64",
             "i386": "x86", "i486": "x86", "i586": "x86", "i686": "x86"}
SCMP_ARCH = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "x86": "SCMP_ARCH_X86",
             "arm": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X",
             "s390": "SCMP_ARCH_S390", "riscv64": "SCMP_ARCH_RISCV64", "mips64": "SCMP_ARCH_MIPS64",
             "loong64": "SCMP_ARCH_LOONGARCH64"}

_TOP = {"defaultAction", "defaultErrnoRet", "architectures", "archMap", "syscalls", "flags",
        "listenerPath", "listenerMetadata"}
_ENTRY = {"names", "name", "action", "errnoRet", "args", "comment", "includes", "excludes"}
_ARG = {"index", "value", "valueTwo", "op"}
_FILTER = {"caps", "arches", "minKernel"}


@record
class Rule:
    """One libseccomp rule: `conditions` are (argument index, SCMP_CMP_* name, value, valueTwo),
    all of which must hold."""

    names: tuple
    action: str
    number: int | None  # the errno of SCMP_ACT_ERRNO, the message of SCMP_ACT_TRACE
    conditions: tuple
    entry: int  # the index of its entry in `syscalls`, for errors


@record
class Profile:
    """What a profile says for one payload: the default action and the rules, in order."""

    default_action: str
    default_number: int | None
    arches: tuple  # SCMP_ARCH_* names, the native one first
    rules: tuple


class ProfileError(ConfigError):
    def __init__(self, source: str, path: str, message: str, line: int | None = None, column: int | None = None):
        super().__init__([Problem(source, path, message, line, column)])


def docker_arch(machine: str) -> str:
    """The format's name for a uname machine ("x86_64" → "amd64"); 32-bit ARM is "arm"."""
    if machine.startswith("arm"):
        return "arm"
    return _MACHINES.get(machine, machine)


def kernel_version(release: str) -> tuple:
    """(major, minor, patch) from a uname release such as "6.18.44-fc-v1045"."""
    parts = []
    for piece in release.split(".")[:3]:
        digits = ""
        for c in piece:
            if not c.isdigit():
                break
            digits += c
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) < len(piece):
            break
    return tuple(parts)


def capability_names(kept) -> tuple:
    """Kept capabilities as sorted names, from a mask (int) or names (any case, CAP_ optional)."""
    if isinstance(kept, int):
        return tuple(sorted(name for bit, name in enumerate(CAPABILITIES) if kept >> bit & 1))
    names = set()
    for name in kept:
        name = name.upper()
        names.add(name if name.startswith("CAP_") else "CAP_" + name)
    return tuple(sorted(names))


def _refuse_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def parse(data: bytes, source: str, arch: str, kept, kernel: tuple) -> Profile:
    """The profile in `data` (read from `source`, named in errors) for the format's `arch` name,
    the kept capabilities (mask or names) and the kernel (major, minor, patch)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProfileError(source, "", f"not UTF-8 (byte {e.start})") from None
    try:
        document = json.loads(text, object_pairs_hook=_refuse_duplicates)
    except json.JSONDecodeError as e:
        raise ProfileError(source, "", f"not JSON: {e.msg}", e.lineno, e.colno) from None
    except ValueError as e:  # a duplicate key
        raise ProfileError(source, "", str(e)) from None
    return _Reader(source).profile(document, arch, set(capability_names(kept)), kernel)


class _Reader:
    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, message: str):
        raise ProfileError(self.source, path, message)

    def obj(self, value, path: str, keys: set) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"expected an object, got {type(value).__name__}")
        unknown = sorted(set(value) - keys)
        if unknown:
            self.fail(path, f"unknown key{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}"
                      f" (expected {', '.join(sorted(keys))})")
        return value

    def strings(self, value, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(path, "expected a list of names")
        return value

    def integer(self, value, path: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(path, f"expected an integer from {low} to {high}, got {json.dumps(value)}")
        return value

    def action(self, entry: dict, path: str, action_key: str, number_key: str):
        name = entry.get(action_key)
        if name == "SCMP_ACT_NOTIFY":
            self.fail(f"{path}.{action_key}", "SCMP_ACT_NOTIFY needs a seccomp agent, which nspawn does not run")
        if name not in ACTIONS:
            self.fail(f"{path}.{action_key}", f"unknown action {json.dumps(name)} (expected one of "
                      f"{', '.join(ACTIONS)})")
        number = entry.get(number_key)
        if number is not None:
            if not ACTIONS[name]:
                self.fail(f"{path}.{number_key}", f"{name} takes no {number_key}")
            number = self.integer(number, f"{path}.{number_key}", 0, 0xFFFF)
        elif name == "SCMP_ACT_ERRNO":
            number = EPERM  # runc's default for an errno action without one
        elif name == "SCMP_ACT_TRACE":
            number = 0
        return name, number

    def profile(self, document, arch: str, caps: set, kernel: tuple) -> Profile:
        top = self.obj(document, "$", _TOP)
        if "defaultAction" not in top:
            self.fail("$", "missing 'defaultAction'")
        if top.get("listenerPath"):
            self.fail("$.listenerPath", "a seccomp agent's listener is not supported by nspawn")
        if top.get("flags"):
            self.fail("$.flags", "filter flags are not supported by nspawn (the filter is loaded with prctl)")
        default_action, default_number = self.action(top, "$", "defaultAction", "defaultErrnoRet")
        native = SCMP_ARCH.get(arch)
        arches = [native] if native else []
        for name in self.strings(top.get("architectures"), "$.architectures"):
            if name not in arches:
                arches.append(name)
        arch_map = top.get("archMap")
        if arch_map is not None:
            if not isinstance(arch_map, list):
                self.fail("$.archMap", "expected a list")
            for i, item in enumerate(arch_map):
                where = f"$.archMap[{i}]"
                item = self.obj(item, where, {"architecture", "subArchitectures"})
                if not isinstance(item.get("architecture"), str):
                    self.fail(f"{where}.architecture", "expected an SCMP_ARCH_* name")
                subs = self.strings(item.get("subArchitectures"), f"{where}.subArchitectures")
                if item["architecture"] == native:
                    arches.extend(s for s in subs if s not in arches)
        syscalls = top.get("syscalls")
        if syscalls is None:
            syscalls = []
        if not isinstance(syscalls, list):
            self.fail("$.syscalls", "expected a list")
        rules = []
        for i, entry in enumerate(syscalls):
            rules.extend(self.entry(entry, f"$.syscalls[{i}]", i, arch, caps, kernel))
        return Profile(default_action, default_number, tuple(arches), tuple(rules))

    def entry(self, entry, path: str, index: int, arch: str, caps: set, kernel: tuple):
        entry = self.obj(entry, path, _ENTRY)
        names = self.strings(entry.get("names"), f"{path}.names")
        if "name" in entry:  # the format's older single name
            if not isinstance(entry["name"], str) or not entry["name"]:
                self.fail(f"{path}.name", "expected a system call's name")
            names = names + [entry["name"]]
        if not names:
            self.fail(path, "no system call names ('names')")
        action, number = self.action(entry, path, "action", "errnoRet")
        includes = self.obj(entry.get("includes") or {}, f"{path}.includes", _FILTER)
        excludes = self.obj(entry.get("excludes") or {}, f"{path}.excludes", _FILTER)
        if "minKernel" in excludes:
            self.fail(f"{path}.excludes.minKernel", "minKernel is only meaningful in 'includes'")
        needed = self.strings(includes.get("caps"), f"{path}.includes.caps")
        only_on = self.strings(includes.get("arches"), f"{path}.includes.arches")
        min_kernel = includes.get("minKernel")
        if min_kernel is not None:
            wanted = kernel_version(min_kernel) if isinstance(min_kernel, str) else ()
            if not wanted or not isinstance(min_kernel, str):
                self.fail(f"{path}.includes.minKernel", f"expected a kernel version such as \"4.8\", got {json.dumps(min_kernel)}")
        barred = self.strings(excludes.get("caps"), f"{path}.excludes.caps")
        not_on = self.strings(excludes.get("arches"), f"{path}.excludes.arches")
        conditions = self.conditions(entry.get("args"), f"{path}.args")
        # Validated in full before deciding, so a broken entry fails on every host alike.
        if any(c not in caps for c in needed) or (only_on and arch not in only_on):
            return []
        if min_kernel is not None and kernel < wanted:
            return []
        if any(c in caps for c in barred) or arch in not_on:
            return []
        indexes = [c[0] for c in conditions]
        if len(set(indexes)) < len(indexes):
            groups = [(c,) for c in conditions]
        else:
            groups = [conditions]
        return [Rule(tuple(names), action, number, group, index) for group in groups]

    def conditions(self, args, path: str) -> tuple:
        if args is None:
            return ()
        if not isinstance(args, list):
            self.fail(path, "expected a list of conditions")
        found = []
        for i, arg in enumerate(args):
            where = f"{path}[{i}]"
            arg = self.obj(arg, where, _ARG)
            index = self.integer(arg.get("index"), f"{where}.index", 0, 5)
            if arg.get("op") not in COMPARISONS:
                self.fail(f"{where}.op", f"unknown comparison {json.dumps(arg.get('op'))} (expected one of "
                          f"{', '.join(COMPARISONS)})")
            value = self.integer(arg.get("value", 0), f"{where}.value", 0, 2**64 - 1)
            two = self.integer(arg.get("valueTwo", 0), f"{where}.valueTwo", 0, 2**64 - 1)
            found.append((index, arg["op"], value, two))
        return tuple(found)
