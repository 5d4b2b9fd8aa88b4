"""The few Win32 calls the HCS backend needs: stdio pipe I/O, handle and
string freeing, the processor groups and Windows build, and CPU affinity on a
container's silo job (as hcsshim's internal/hcsoci/cpuaffinity.go sets it); and for the
image store on Windows, file locks and whether a process is alive.

NtOpenJobObject/RtlNtStatusToDosError (ntdll.dll) and CoTaskMemFree
(ole32.dll) live here too: they are single functions of system DLLs serving
the same purposes, not worth a module each.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, byref, c_int32, c_uint16, c_uint32, c_void_p, c_wchar
from typing import Mapping

from .errors import E_FAIL, HcsError, fails_when_zero, unchecked, win32_hresult
from .loader import Bindings, last_error, prototype, sdk

# The Win32 layer is ctypes-windows-sdk's where it has it (README, "Windows": item by item).
_winerror = sdk("shared.winerror")
_winnt = sdk("um.winnt")
_winbase = sdk("um.winbase")
_ntdef = sdk("shared.ntdef")
ERROR_HANDLE_EOF = _winerror.ERROR_HANDLE_EOF
ERROR_BROKEN_PIPE = _winerror.ERROR_BROKEN_PIPE
ERROR_NO_DATA = _winerror.ERROR_NO_DATA
ERROR_IO_PENDING = _winerror.ERROR_IO_PENDING
FILE_TYPE_UNKNOWN = _winbase.FILE_TYPE_UNKNOWN
FILE_TYPE_DISK = _winbase.FILE_TYPE_DISK
FILE_TYPE_CHAR = _winbase.FILE_TYPE_CHAR
FILE_TYPE_PIPE = _winbase.FILE_TYPE_PIPE
# winnt.h's definition: cwinsdk has the standard rights, its JOB_OBJECT_* lines are docstring text.
JOB_OBJECT_ALL_ACCESS = _winnt.STANDARD_RIGHTS_REQUIRED | _winnt.SYNCHRONIZE | 0x3F
_minwinbase = sdk("um.minwinbase")
OVERLAPPED = _minwinbase.OVERLAPPED
LOCKFILE_FAIL_IMMEDIATELY = _minwinbase.LOCKFILE_FAIL_IMMEDIATELY
LOCKFILE_EXCLUSIVE_LOCK = _minwinbase.LOCKFILE_EXCLUSIVE_LOCK
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000  # winnt.h; cwinsdk has it only as docstring text
STILL_ACTIVE = 259  # GetExitCodeProcess's answer for a running process (its reference page)
GROUP_AFFINITY = _winnt.GROUP_AFFINITY
OSVERSIONINFOW = _winnt.OSVERSIONINFOW
UNICODE_STRING = _ntdef.UNICODE_STRING
OBJECT_ATTRIBUTES = _ntdef.OBJECT_ATTRIBUTES
# cwinsdk has JOBOBJECTINFOCLASS only as header text in a docstring (winnt.h's value).
JobObjectGroupInformationEx = 14


def _last_error() -> int:
    code = last_error()
    return win32_hresult(code) if code else E_FAIL


# A FALSE or NULL result fails with the thread's last error.
_zero_fails = fails_when_zero(_last_error)


def _local_free_check(export):
    def check(leftover, func, args):
        if leftover:  # LocalFree returns the pointer back when it fails
            raise HcsError(export, win32_hresult(last_error()))
        return None
    return check


def _file_type_check(export):
    # FILE_TYPE_UNKNOWN is also a failure's answer, told apart by the last error (GetFileType's page).
    def check(kind, func, args):
        if kind == FILE_TYPE_UNKNOWN:
            code = last_error()
            if code:
                raise HcsError(export, win32_hresult(code))
        return kind
    return check


def _ntstatus(export):
    def check(status, func, args):
        if status:
            raise HcsError(export, win32_hresult(_ntdll.RtlNtStatusToDosError(status)))
        return status
    return check


# cwinsdk 0.0.20 lacks ReadFile, WriteFile, SetInformationJobObject, the processor-group
# calls, OpenProcess, GetExitCodeProcess, NtOpenJobObject and RtlGetVersion: their prototypes are written here (with its
# structures). The errchecks are nspawn's everywhere: cwinsdk's raise a bare OSError, read
# GetLastError without use_last_error, and several of these functions have none.
_BOOL = c_int32
_kernel32 = Bindings("kernel32.dll", {
    "CloseHandle": prototype(sdk("um.handleapi").CloseHandle, _zero_fails),
    "ReadFile": (_BOOL, [c_void_p, c_void_p, c_uint32, POINTER(c_uint32), POINTER(OVERLAPPED)], _zero_fails),
    "WriteFile": (_BOOL, [c_void_p, c_void_p, c_uint32, POINTER(c_uint32), POINTER(OVERLAPPED)], _zero_fails),
    "GetOverlappedResult": prototype(sdk("um.ioapiset").GetOverlappedResult, _zero_fails),
    "CreateEventW": prototype(sdk("um.synchapi").CreateEventW, _zero_fails),
    "LocalFree": prototype(_winbase.LocalFree, _local_free_check),
    "GetFileType": prototype(sdk("um.fileapi").GetFileType, _file_type_check),
    "SetInformationJobObject": (_BOOL, [c_void_p, c_int32, c_void_p, c_uint32], _zero_fails),
    "GetActiveProcessorGroupCount": (c_uint16, [], _zero_fails),
    "GetActiveProcessorCount": (c_uint32, [c_uint16], _zero_fails),
    "LockFileEx": prototype(sdk("um.fileapi").LockFileEx, _zero_fails),
    "OpenProcess": (c_void_p, [c_uint32, _BOOL, c_uint32], _zero_fails),
    "GetExitCodeProcess": (_BOOL, [c_void_p, POINTER(c_uint32)], _zero_fails),
})
_ntdll = Bindings("ntdll.dll", {
    "NtOpenJobObject": (c_int32, [POINTER(c_void_p), c_uint32, POINTER(OBJECT_ATTRIBUTES)], _ntstatus),
    "RtlNtStatusToDosError": prototype(sdk("um.winternl").RtlNtStatusToDosError, unchecked),
    "RtlGetVersion": (c_int32, [POINTER(OSVERSIONINFOW)], _ntstatus),
})
_ole32 = Bindings("ole32.dll", {
    "CoTaskMemFree": prototype(sdk("um.combaseapi").CoTaskMemFree, unchecked),
})
BINDINGS = (_kernel32, _ntdll, _ole32)


def local_free(ptr) -> None:
    """Frees computecore/computestorage output strings, as their reference pages say."""
    _kernel32.LocalFree(ptr)


def co_task_mem_free(ptr) -> None:
    """Frees vmcompute.dll and HCN output strings (the HCN pages say so; hcsshim frees
    vmcompute.dll's the same way, internal/interop/interop.go)."""
    _ole32.CoTaskMemFree(ptr)


def close_handle(handle: int) -> None:
    _kernel32.CloseHandle(handle)


def lock_file(handle: int, exclusive: bool, wait: bool = True) -> None:
    """A lock on the first byte of an open file, shared or exclusive, as flock gives one on
    Linux; released when the handle closes. HcsError (ERROR_LOCK_VIOLATION) when another
    holds it and `wait` is false."""
    flags = (LOCKFILE_EXCLUSIVE_LOCK if exclusive else 0) | (0 if wait else LOCKFILE_FAIL_IMMEDIATELY)
    _kernel32.LockFileEx(handle, flags, 0, 1, 0, byref(OVERLAPPED()))


def process_alive(pid: int) -> bool:
    """Whether process `pid` is running (os.kill(pid, 0) would terminate it on Windows)."""
    try:
        handle = _kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    except HcsError as e:
        return e.win32 == 5  # ERROR_ACCESS_DENIED: it exists; ERROR_INVALID_PARAMETER: no such process
    try:
        code = c_uint32()
        _kernel32.GetExitCodeProcess(handle, byref(code))
        return code.value == STILL_ACTIVE
    finally:
        close_handle(handle)


def file_type(handle: int) -> int:
    """FILE_TYPE_DISK, FILE_TYPE_CHAR (a console or the null device), FILE_TYPE_PIPE (a pipe or
    a socket) or FILE_TYPE_UNKNOWN."""
    return _kernel32.GetFileType(handle)


def processor_groups() -> tuple[int, ...]:
    """The active CPUs of each processor group, group 0 first. Windows sizes groups by NUMA
    node, so a group may hold fewer than 64 (a 72-CPU host has two of 36), and numbers CPUs
    group after group (Microsoft's docs, "Processor Groups")."""
    count = _kernel32.GetActiveProcessorGroupCount()
    return tuple(_kernel32.GetActiveProcessorCount(group) for group in range(count))


def windows_build() -> int:
    """The build RtlGetVersion reports: unlike GetVersionEx it is not capped by the
    application's manifest (its reference page)."""
    info = OSVERSIONINFOW()
    info.dwOSVersionInfoSize = ctypes.sizeof(OSVERSIONINFOW)
    _ntdll.RtlGetVersion(byref(info))
    return info.dwBuildNumber


def _transfer(start, handle: int, buf, size: int) -> int:
    # Whether HCS opens its pipes FILE_FLAG_OVERLAPPED is not documented, so
    # every transfer passes an OVERLAPPED with an event: a synchronous handle
    # completes at once, an overlapped one reports ERROR_IO_PENDING and
    # GetOverlappedResult waits for it.
    done = c_uint32()
    ov = OVERLAPPED()
    ov.hEvent = _kernel32.CreateEventW(None, True, False, None)
    try:
        try:
            start(handle, buf, size, byref(done), byref(ov))
        except HcsError as e:
            if e.win32 != ERROR_IO_PENDING:
                raise
            _kernel32.GetOverlappedResult(handle, byref(ov), byref(done), True)
    finally:
        close_handle(ov.hEvent)
    return done.value


def read(handle: int, size: int = 65536) -> bytes:
    """Blocks for the next chunk of a stdio pipe; b"" once the writer is gone."""
    buf = ctypes.create_string_buffer(size)
    while True:
        try:
            n = _transfer(_kernel32.ReadFile, handle, buf, size)
        except HcsError as e:
            if e.win32 in (ERROR_BROKEN_PIPE, ERROR_HANDLE_EOF):
                return b""
            raise
        if n:
            return buf.raw[:n]


def write(handle: int, data: bytes) -> None:
    """Writes all of data to a stdio pipe; BrokenPipeError once the reader is gone."""
    view = memoryview(data)
    while view:
        chunk = bytes(view[:1 << 20])
        try:
            n = _transfer(_kernel32.WriteFile, handle, chunk, len(chunk))
        except HcsError as e:
            if e.win32 in (ERROR_BROKEN_PIPE, ERROR_NO_DATA):
                raise BrokenPipeError(e.message) from e
            raise
        view = view[n:]


def set_silo_affinity(system_id: str, masks: Mapping[int, int]) -> None:
    """Pins every process of a process-isolated container, present and future,
    to CPUs: {processor group: mask}.  Must run after create, before start;
    opening the silo's job by name needs SYSTEM (hcsshim internal/hcs/v2/system.go,
    openSilo)."""
    if not masks or not all(masks.values()):
        raise ValueError("every processor group needs a non-zero mask")
    name = ctypes.create_unicode_buffer(f"\\Container_{system_id}")
    size = (len(name) - 1) * ctypes.sizeof(ctypes.c_wchar)  # bytes, without the NUL
    us = UNICODE_STRING(size, size, ctypes.cast(name, POINTER(c_wchar)))
    oa = OBJECT_ATTRIBUTES(ctypes.sizeof(OBJECT_ATTRIBUTES), None, ctypes.pointer(us), 0, None, None)
    job = c_void_p()
    _ntdll.NtOpenJobObject(byref(job), JOB_OBJECT_ALL_ACCESS, byref(oa))
    try:
        groups = (GROUP_AFFINITY * len(masks))(*(GROUP_AFFINITY(m, g) for g, m in sorted(masks.items())))
        _kernel32.SetInformationJobObject(job, JobObjectGroupInformationEx, groups, ctypes.sizeof(groups))
    finally:
        close_handle(job.value)
