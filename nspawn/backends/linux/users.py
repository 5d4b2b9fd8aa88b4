"""The user the payload runs as: `user` (NAME|UID[:GROUP|GID]) read against the container's
/etc/passwd and /etc/group, and the switch to it just before exec.

The lookup runs twice over the same files: by the host checks on the host path behind the
container's /etc (to refuse an unknown name with exit 2 before anything is made), and by the
container's init once its root is its own (the files may have changed; then it is what the
payload will see). Both call `lookup`. It runs in a forked process, so it imports nothing and
takes no lock.
"""

from __future__ import annotations

import os

from nspawn import exitcodes
from nspawn.records import record

ROOT = "root"
_ROOT_HOME = "/root"
_NO_HOME = "/"
ACCOUNT_VARIABLES = ("HOME", "USER", "LOGNAME")  # set from the account unless the config sets them  # a numeric user the passwd file does not know, as Docker gives it


class UnknownUser(OSError):
    """A name in `user` the container's files do not hold: the user's mistake, exit 2."""

    exit_code = exitcodes.USAGE


@record
class Account:
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary, the primary group first
    name: str | None  # None: a numeric user without a passwd line
    home: str


def split(spec: str | None) -> tuple[str, str | None]:
    """(user, group or None) of NAME|UID[:GROUP|GID]; no spec is root."""
    user, _, group = (spec or ROOT).partition(":")
    return user, group or None


def is_root(spec: str | None) -> bool:
    """Whether the spec names root without reading any file (a name that turns out to be uid 0
    is treated as the other users are: without capabilities)."""
    user, _ = split(spec)
    return user in (ROOT, "0")


def _entries(path: str) -> list[list[str]]:
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 22)
    except FileNotFoundError:
        return []
    return [line.split(":") for line in raw.decode(errors="replace").splitlines()
            if line and not line.startswith("#") and line.count(":") >= 2]


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) < 2**32 - 1 else None


def lookup(spec: str | None, passwd: str = "/etc/passwd", group: str = "/etc/group") -> Account:
    """The account `spec` names in these files; raises UnknownUser for a name they lack."""
    user, group_spec = split(spec)
    uid = 0 if user == ROOT else _number(user)  # root is root, even in an image without a passwd file
    entry = next((e for e in _entries(passwd) if len(e) >= 7 and (e[0] == user if uid is None or user == ROOT else _number(e[2]) == uid)),
                 None)
    if entry is None:
        if uid is None:
            raise UnknownUser(0, f"the user {user!r} is not in the container's /etc/passwd; give a user it has, or a numeric UID")
        # Not the root group: a uid the image does not know gets a group of its own number.
        name, gid, home = (ROOT, 0, _ROOT_HOME) if uid == 0 else (None, uid, _NO_HOME)
    else:
        name, uid, gid, home = entry[0], int(entry[2]), _number(entry[3]), entry[5] or _NO_HOME
        gid = uid if gid is None else gid
    groups = _entries(group)
    if group_spec is not None:
        gid = _number(group_spec)
        if gid is None:
            found = next((e for e in groups if e[0] == group_spec and _number(e[2]) is not None), None)
            if found is None:
                raise UnknownUser(0, f"the group {group_spec!r} is not in the container's /etc/group; give a group it has, or a numeric GID")
            gid = int(found[2])
    extra = [] if name is None else [int(e[2]) for e in groups if len(e) >= 4 and _number(e[2]) is not None
                                     and name in e[3].split(",")]
    return Account(uid, gid, tuple(dict.fromkeys([gid, *extra])), name, home)


def environment(account: Account, env: dict) -> dict:
    """HOME, USER and LOGNAME of the account, under what the config set itself."""
    named = {"HOME": account.home}
    if account.name is not None:
        named.update(USER=account.name, LOGNAME=account.name)
    return {**named, **env}


def become(account: Account) -> None:
    """Switch to the account. Called by root with its capabilities still effective, after the
    bounding set was cut and before the final capset: the change of uid away from 0 empties the
    permitted, effective and ambient sets (no PR_SET_KEEPCAPS)."""
    os.setgroups(list(account.groups))
    os.setresgid(account.gid, account.gid, account.gid)
    os.setresuid(account.uid, account.uid, account.uid)
