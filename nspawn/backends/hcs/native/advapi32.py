"""The token privileges a layer import needs: SeBackupPrivilege and SeRestorePrivilege, which
HcsImportLayer (and vmcompute's ImportLayer) write a layer's files and security descriptors
with. An administrator holds both, disabled; they are enabled on the process token here.

The prototypes and structures are ctypes-windows-sdk's; the errchecks nspawn's.
"""

from __future__ import annotations

import ctypes
from ctypes import byref

from .errors import E_FAIL, HcsError, fails_when_zero, win32_hresult
from .loader import Bindings, last_error, prototype, sdk

_winnt = sdk("um.winnt")
_winerror = sdk("shared.winerror")
BACKUP = _winnt.SE_BACKUP_NAME
RESTORE = _winnt.SE_RESTORE_NAME
ERROR_NOT_ALL_ASSIGNED = _winerror.ERROR_NOT_ALL_ASSIGNED
ERROR_PRIVILEGE_NOT_HELD = _winerror.ERROR_PRIVILEGE_NOT_HELD
# GetCurrentProcess()'s pseudo handle: a constant, no call needed (its reference page).
CURRENT_PROCESS = -1


def _last_error() -> int:
    code = last_error()
    return win32_hresult(code) if code else E_FAIL


_zero_fails = fails_when_zero(_last_error)


def _adjust_check(export):
    # AdjustTokenPrivileges succeeds (TRUE) when the token lacks a privilege it was asked to
    # enable, and says so only in the last error: ERROR_NOT_ALL_ASSIGNED (its reference page).
    def check(ok, func, args):
        code = last_error()
        if not ok or code == ERROR_NOT_ALL_ASSIGNED:
            raise HcsError(export, win32_hresult(code) if code else E_FAIL)
        return ok
    return check


_advapi32 = Bindings("advapi32.dll", {
    "OpenProcessToken": prototype(sdk("um.processthreadsapi").OpenProcessToken, _zero_fails),
    "LookupPrivilegeValueW": prototype(sdk("um.winbase").LookupPrivilegeValueW, _zero_fails),
    "AdjustTokenPrivileges": prototype(sdk("um.securitybaseapi").AdjustTokenPrivileges, _adjust_check),
})
BINDINGS = (_advapi32,)


class PrivilegeMissing(Exception):
    """The process token does not hold a privilege: the launcher is not an administrator."""

    def __init__(self, names: list, cause: HcsError):
        self.names = names
        super().__init__(f"this process's token does not hold {' and '.join(names)} ({cause}); expected nspawn "
                         "run as an administrator (from an elevated prompt), whose token holds them")


def enable(*names: str) -> None:
    """Enables each named privilege on this process's token; PrivilegeMissing when the token
    does not hold one of them."""
    from .kernel32 import close_handle

    token = _winnt.HANDLE()
    _advapi32.OpenProcessToken(CURRENT_PROCESS, _winnt.TOKEN_ADJUST_PRIVILEGES | _winnt.TOKEN_QUERY, byref(token))
    try:
        missing, cause = [], None
        for name in names:
            privileges = _winnt.TOKEN_PRIVILEGES()
            privileges.PrivilegeCount = 1
            _advapi32.LookupPrivilegeValueW(None, name, byref(privileges.Privileges[0].Luid))
            privileges.Privileges[0].Attributes = _winnt.SE_PRIVILEGE_ENABLED
            try:
                _advapi32.AdjustTokenPrivileges(token, False, byref(privileges), ctypes.sizeof(privileges), None, None)
            except HcsError as e:
                if e.win32 not in (ERROR_NOT_ALL_ASSIGNED, ERROR_PRIVILEGE_NOT_HELD):
                    raise
                missing.append(name)
                cause = e
        if missing:
            raise PrivilegeMissing(missing, cause)
    finally:
        close_handle(token.value)
