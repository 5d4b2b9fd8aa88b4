"""HRESULT failures of HCS calls as one exception type with a one-line message."""

from __future__ import annotations

import json
from typing import Callable


class LibraryUnavailable(Exception):
    """A native library could not be loaded (not Windows, feature missing, bad simulator path)."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name} is not available: {reason}")
        self.name = name
        self.reason = reason


class MissingExport(LibraryUnavailable):
    """The library loads but lacks a function nspawn calls (an older Windows build): raised
    when that function is first called, not when the library or a module binding it loads."""

    def __init__(self, name: str, export: str):
        super().__init__(name, f"it has no export {export}")
        self.export = export


def _win32(code: int) -> int:
    return 0x80070000 | code


# The HCS_E_* codes (Microsoft's HCS docs, "HCS Error Code"), their
# ERROR_VMCOMPUTE_* forms that vmcompute.dll returns (severity 0xC), and the generic
# COM codes HCS hands back: ctypes-windows-sdk's winerror has none of the first two and
# lacks E_NOTIMPL and E_ABORT.
NAMES = {
    0x80370100: "HCS_E_TERMINATED_DURING_START",
    0x80370101: "HCS_E_IMAGE_MISMATCH",
    0x80370102: "HCS_E_HYPERV_NOT_INSTALLED",
    0x80370105: "HCS_E_INVALID_STATE",
    0x80370106: "HCS_E_UNEXPECTED_EXIT",
    0x80370107: "HCS_E_TERMINATED",
    0x80370108: "HCS_E_CONNECT_FAILED",
    0x80370109: "HCS_E_CONNECTION_TIMEOUT",
    0x8037010A: "HCS_E_CONNECTION_CLOSED",
    0x8037010B: "HCS_E_UNKNOWN_MESSAGE",
    0x8037010C: "HCS_E_UNSUPPORTED_PROTOCOL_VERSION",
    0x8037010D: "HCS_E_INVALID_JSON",
    0x8037010E: "HCS_E_SYSTEM_NOT_FOUND",
    0x8037010F: "HCS_E_SYSTEM_ALREADY_EXISTS",
    0x80370110: "HCS_E_SYSTEM_ALREADY_STOPPED",
    0x80370111: "HCS_E_PROTOCOL_ERROR",
    0x80370112: "HCS_E_INVALID_LAYER",
    0x80370113: "HCS_E_WINDOWS_INSIDER_REQUIRED",
    0x80370114: "HCS_E_SERVICE_NOT_AVAILABLE",
    0x80370115: "HCS_E_OPERATION_NOT_STARTED",
    0x80370116: "HCS_E_OPERATION_ALREADY_STARTED",
    0x80370117: "HCS_E_OPERATION_PENDING",
    0x80370118: "HCS_E_OPERATION_TIMEOUT",
    0x80370119: "HCS_E_OPERATION_SYSTEM_CALLBACK_ALREADY_SET",
    0x8037011A: "HCS_E_OPERATION_RESULT_ALLOCATION_FAILED",
    0x8037011B: "HCS_E_ACCESS_DENIED",
    0x8037011C: "HCS_E_GUEST_CRITICAL_ERROR",
    0x8037011D: "HCS_E_PROCESS_INFO_NOT_AVAILABLE",
    0x8037011E: "HCS_E_SERVICE_DISCONNECT",
    0x8037011F: "HCS_E_PROCESS_ALREADY_STOPPED",
    0xC0370100: "ERROR_VMCOMPUTE_TERMINATED_DURING_START",
    0xC0370101: "ERROR_VMCOMPUTE_IMAGE_MISMATCH",
    0xC0370102: "ERROR_VMCOMPUTE_HYPERV_NOT_INSTALLED",
    0xC0370103: "ERROR_VMCOMPUTE_OPERATION_PENDING",
    0xC0370104: "ERROR_VMCOMPUTE_TOO_MANY_NOTIFICATIONS",
    0xC0370105: "ERROR_VMCOMPUTE_INVALID_STATE",
    0xC0370106: "ERROR_VMCOMPUTE_UNEXPECTED_EXIT",
    0xC0370107: "ERROR_VMCOMPUTE_TERMINATED",
    0xC0370108: "ERROR_VMCOMPUTE_CONNECT_FAILED",
    0xC0370109: "ERROR_VMCOMPUTE_TIMEOUT",
    0xC037010A: "ERROR_VMCOMPUTE_CONNECTION_CLOSED",
    0xC037010B: "ERROR_VMCOMPUTE_UNKNOWN_MESSAGE",
    0xC037010C: "ERROR_VMCOMPUTE_UNSUPPORTED_PROTOCOL_VERSION",
    0xC037010D: "ERROR_VMCOMPUTE_INVALID_JSON",
    0xC037010E: "ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND",
    0xC037010F: "ERROR_VMCOMPUTE_SYSTEM_ALREADY_EXISTS",
    0xC0370110: "ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED",
    0xC0370111: "ERROR_VMCOMPUTE_PROTOCOL_ERROR",
    0xC0370112: "ERROR_VMCOMPUTE_INVALID_LAYER",
    0xC0370113: "ERROR_VMCOMPUTE_WINDOWS_INSIDER_REQUIRED",
    0x80004001: "E_NOTIMPL",
    0x80004004: "E_ABORT",
    0x80004005: "E_FAIL",
    0x8007000E: "E_OUTOFMEMORY",
}

# The Win32 codes hcsshim names (internal/hcs/errors.go), as HRESULTs of facility 7: their
# values are ctypes-windows-sdk's, read when a message first names one (the loader, through
# which cwinsdk is imported, imports this module for its exceptions).
_WIN32_NAMES = ("ERROR_FILE_NOT_FOUND", "ERROR_ACCESS_DENIED", "ERROR_INVALID_HANDLE", "ERROR_INVALID_DATA",
                "ERROR_NOT_READY", "ERROR_NOT_SUPPORTED", "ERROR_INVALID_PARAMETER", "ERROR_BROKEN_PIPE",
                "ERROR_INSUFFICIENT_BUFFER", "ERROR_PROC_NOT_FOUND", "ERROR_DEVICE_NOT_CONNECTED",
                "ERROR_NOT_FOUND", "ERROR_NOT_ALL_ASSIGNED", "ERROR_PRIVILEGE_NOT_HELD")
_win32_names: dict[int, str] | None = None


def name(hresult: int) -> str | None:
    """The symbolic name of an HRESULT nspawn knows, else None."""
    if hresult in NAMES:
        return NAMES[hresult]
    if hresult & 0xFFFF0000 != 0x80070000:
        return None
    global _win32_names
    if _win32_names is None:
        from .loader import sdk

        winerror = sdk("shared.winerror")
        _win32_names = {getattr(winerror, n): n for n in _WIN32_NAMES}
    return _win32_names.get(hresult & 0xFFFF)


OPERATION_PENDING_V1 = 0xC0370103
OPERATION_TIMEOUT = 0x80370118
E_NOTIMPL = 0x80004001
E_FAIL = 0x80004005
E_OUTOFMEMORY = 0x8007000E

# hcsshim's classes (internal/hcs/errors.go: IsNotExist, IsAlreadyStopped), with
# both the 0xC037 and 0x8037 forms because which one a given Windows build
# returns is not pinned down.
_ALREADY_STOPPED = {0xC0370110, 0x80370110, 0x8037011F, _win32(1168)}
_NOT_FOUND = {0xC037010E, 0x8037010E, _win32(1168)}


def win32_hresult(code: int) -> int:
    """HRESULT_FROM_WIN32 for a non-zero Win32 error code."""
    return _win32(code & 0xFFFF)


class HcsError(Exception):
    """A failed HCS/HCN/Win32 call: which call, the HRESULT, and HCS's own words."""

    def __init__(self, call: str, hresult: int, document: str | None = None):
        self.call = call
        self.hresult = hresult & 0xFFFFFFFF
        self.name = name(self.hresult)
        self.document = document or None
        super().__init__(self.message)

    @property
    def win32(self) -> int | None:
        """The Win32 code inside a 0x8007xxxx HRESULT (facility 7, tested as hcsshim's
        internal/interop/interop.go does), else None."""
        return self.hresult & 0xFFFF if self.hresult & 0x1FFF0000 == 0x00070000 else None

    @property
    def detail(self) -> str | None:
        """ErrorMessage (HCS) or Error (HCN, HNS) from the document, else its text."""
        if not self.document:
            return None
        try:
            doc = json.loads(self.document)
        except ValueError:
            return self.document.strip()
        if isinstance(doc, dict):
            for key in ("ErrorMessage", "Error"):
                if isinstance(doc.get(key), str) and doc[key]:
                    return doc[key]
        return self.document.strip()

    @property
    def message(self) -> str:
        text = f"{self.call} failed: 0x{self.hresult:08X}"
        if self.name:
            text += f" {self.name}"
        if self.detail:
            text += f": {self.detail}"
        return " ".join(text.split())


def is_already_stopped(e: BaseException) -> bool:
    """Shutdown/terminate/kill found nothing left running: teardown treats this as success."""
    return isinstance(e, HcsError) and e.hresult in _ALREADY_STOPPED


def is_pending(e: BaseException) -> bool:
    """ERROR_VMCOMPUTE_OPERATION_PENDING: a shutdown or terminate accepted, its end told by the
    exit event (hcsshim internal/hcs/system.go ignores it from both)."""
    return isinstance(e, HcsError) and e.hresult == OPERATION_PENDING_V1


def is_not_found(e: BaseException) -> bool:
    """The system/process/network object is gone.  HNS reports this only in
    its text, which hcsshim matches the same way."""
    if not isinstance(e, HcsError):
        return False
    return e.hresult in _NOT_FOUND or "element not found" in (e.detail or "").lower()


def is_invalid_state(e: BaseException) -> bool:
    """HCS refused the request in the object's current state, which a system being torn
    down passes through (moby daemon/graphdriver/windows/windows.go retries enumerations
    refused so)."""
    return isinstance(e, HcsError) and e.hresult in (0x80370105, 0xC0370105)


def is_process_gone(e: BaseException) -> bool:
    """Terminating an exited process: already-stopped codes or ERROR_ACCESS_DENIED, which
    hcsshim also takes for "already dead" (internal/hcs/v2/process.go, Kill)."""
    return is_already_stopped(e) or (isinstance(e, HcsError) and e.win32 == 5)


def fails(export):
    """errcheck for calls whose only result is the HRESULT."""
    def check(hr, func, args):
        if hr < 0:
            raise HcsError(export, hr)
        return hr
    return check


def fails_when_zero(hresult: Callable[[], int]):
    """errcheck for calls whose zero result (FALSE, NULL) is their failure; hresult() names
    it, asked right after the call."""
    def factory(export):
        def check(result, func, args):
            if not result:
                raise HcsError(export, hresult())
            return result
        return check
    return factory


def unchecked(export):
    """errcheck for calls that cannot fail (void) or whose result the caller judges."""
    def check(result, func, args):
        return result
    return check
