"""computecore.dll: the documented v2 HCS API (Microsoft's HCS reference, a page per function
under learn.microsoft.com/virtualization/api/hcs/reference/), behind Python objects.

Each call runs synchronously in the hcsshim way (internal/hcs/v2/operation.go): create an
operation, make the call, wait for the operation, always close it.  Failures raise HcsError
naming the HCS function and carrying its result document.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import logging
import threading
from ctypes import POINTER, Structure, c_int32, c_uint32, c_void_p, c_wchar_p
from typing import Callable

from nspawn.records import record

from . import kernel32
from .errors import (
    E_NOTIMPL, E_OUTOFMEMORY, OPERATION_TIMEOUT, HcsError, fails, fails_when_zero, is_already_stopped, unchecked,
)
from .loader import FUNCTYPE, Bindings, Closing, take_string

INFINITE = 0xFFFFFFFF
GENERIC_ALL = 0x10000000
CREATE_TIMEOUT_MS = 240_000  # hcsshim's budget for create and start
INVALID_HANDLE_VALUE = ctypes.c_void_p(-1).value

EVENT_SYSTEM_EXITED = 0x00000001
EVENT_PROCESS_EXITED = 0x00010000
EVENT_SERVICE_DISCONNECT = 0x02000000

log = logging.getLogger(__name__)


class HCS_PROCESS_INFORMATION(Structure):
    _fields_ = [("ProcessId", c_uint32), ("Reserved", c_uint32), ("StdInput", c_void_p),
                ("StdOutput", c_void_p), ("StdError", c_void_p)]


class HCS_EVENT(Structure):
    _fields_ = [("Type", c_uint32), ("EventData", c_void_p), ("Operation", c_void_p)]


EVENT_CALLBACK = FUNCTYPE(None, POINTER(HCS_EVENT), c_void_p)


@record
class Event:
    type: int
    data: str | None  # JSON (SystemExitStatus, ProcessStatus, ...) copied out of HCS's buffer

    def document(self) -> dict:
        return json.loads(self.data) if self.data else {}


class CallbackRegistry:
    """Context keys for native callbacks, as hcsshim keeps them (internal/hcs/v2/notification.go).

    HCS gets a small integer as context, never a Python object; the handler
    stays registered until the handle is closed or the callback unregistered,
    and the native thunks are module-level objects, so nothing native code can
    still call is ever garbage-collected.  Handlers run on HCS's threads and
    must not raise: exceptions are logged and swallowed.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._keys = itertools.count(1)
        self._handlers: dict[int, Callable] = {}

    def add(self, handler: Callable) -> int:
        with self._lock:
            key = next(self._keys)
            self._handlers[key] = handler
            return key

    def remove(self, key: int | None) -> None:
        with self._lock:
            self._handlers.pop(key, None)

    def dispatch(self, key: int | None, *args) -> None:
        with self._lock:
            handler = self._handlers.get(key or 0)
        if handler is None:
            return
        try:
            handler(*args)
        except BaseException:  # an exception must never unwind into HCS
            log.exception("HCS callback handler failed")

    def __len__(self) -> int:
        return len(self._handlers)


registry = CallbackRegistry()


@EVENT_CALLBACK
def _on_event(event, context):
    ev = event.contents
    registry.dispatch(context, Event(ev.Type, ctypes.wstring_at(ev.EventData) if ev.EventData else None))


# ---- prototypes and error checks -------------------------------------------

def _fails_with_operation(op_index: int):
    """A call taking an HCS_OPERATION: on failure the operation's result
    document explains it, even when the call itself failed (hcsshim
    internal/hcs/v2/operation.go fetches it then too)."""
    def factory(export):
        def check(hr, func, args):
            if hr < 0:
                raise HcsError(export, hr, _operation_document(args[op_index]))
            return hr
        return check
    return factory


def _result_document(doc_index: int, raise_on_failure: bool = True):
    """Copies and LocalFrees the result document; returns it (or (hr, doc))."""
    def factory(export):
        def check(hr, func, args):
            doc = take_string(args[doc_index], kernel32.local_free)
            if not raise_on_failure:
                return hr, doc
            if hr < 0:
                raise HcsError(export, hr, doc)
            return doc
        return check
    return factory


_H = c_void_p
_OUT = POINTER(c_void_p)
_HR = c_int32
_cc = Bindings("computecore.dll", {
    # NULL when HCS could not allocate the operation, its only documented failure.
    "HcsCreateOperation": (_H, [c_void_p, c_void_p], fails_when_zero(lambda: E_OUTOFMEMORY)),
    "HcsCloseOperation": (None, [_H], unchecked),
    "HcsWaitForOperationResult": (_HR, [_H, c_uint32, _OUT], _result_document(2)),
    "HcsWaitForOperationResultAndProcessInfo": (
        _HR, [_H, c_uint32, POINTER(HCS_PROCESS_INFORMATION), _OUT], _result_document(3)),
    "HcsGetOperationResult": (_HR, [_H, _OUT], _result_document(1, raise_on_failure=False)),
    "HcsCancelOperation": (_HR, [_H], fails),
    "HcsCreateComputeSystem": (_HR, [c_wchar_p, c_wchar_p, _H, c_void_p, _OUT], _fails_with_operation(2)),
    "HcsOpenComputeSystem": (_HR, [c_wchar_p, c_uint32, _OUT], fails),
    "HcsStartComputeSystem": (_HR, [_H, _H, c_wchar_p], _fails_with_operation(1)),
    "HcsShutDownComputeSystem": (_HR, [_H, _H, c_wchar_p], _fails_with_operation(1)),
    "HcsTerminateComputeSystem": (_HR, [_H, _H, c_wchar_p], _fails_with_operation(1)),
    "HcsCloseComputeSystem": (None, [_H], unchecked),
    "HcsEnumerateComputeSystems": (_HR, [c_wchar_p, _H], _fails_with_operation(1)),
    "HcsSetComputeSystemCallback": (_HR, [_H, c_uint32, c_void_p, EVENT_CALLBACK], fails),
    "HcsCreateProcess": (_HR, [_H, c_wchar_p, _H, c_void_p, _OUT], _fails_with_operation(2)),
    "HcsOpenProcess": (_HR, [_H, c_uint32, c_uint32, _OUT], fails),
    "HcsCloseProcess": (None, [_H], unchecked),
    "HcsTerminateProcess": (_HR, [_H, _H, c_wchar_p], _fails_with_operation(1)),
    "HcsSignalProcess": (_HR, [_H, _H, c_wchar_p], _fails_with_operation(1)),
    "HcsGetProcessInfo": (_HR, [_H, _H], _fails_with_operation(1)),
    "HcsGetProcessProperties": (_HR, [_H, _H, c_wchar_p], _fails_with_operation(1)),
    "HcsModifyProcess": (_HR, [_H, _H, c_wchar_p], _fails_with_operation(1)),
    "HcsSetProcessCallback": (_HR, [_H, c_uint32, c_void_p, EVENT_CALLBACK], fails),
})
BINDINGS = (_cc,)


def _operation_document(op) -> str | None:
    return _cc.HcsGetOperationResult(op, c_void_p())[1]


# ---- operations --------------------------------------------------------------

class Operation(Closing):
    """One HCS_OPERATION, closed on exit from the with-block."""

    def __init__(self):
        self.handle = _cc.HcsCreateOperation(None, None)

    def close(self) -> None:
        if self.handle:
            _cc.HcsCloseOperation(self.handle)
            self.handle = None

    def wait(self, call: str, timeout_ms: int = INFINITE) -> str | None:
        """The result document of the tracked call; HcsError named after `call`."""
        try:
            return _cc.HcsWaitForOperationResult(self.handle, timeout_ms, c_void_p())
        except HcsError as e:
            raise self._failed(call, e) from None

    def wait_process(self, call: str, timeout_ms: int = INFINITE) -> HCS_PROCESS_INFORMATION:
        info = HCS_PROCESS_INFORMATION()
        try:
            _cc.HcsWaitForOperationResultAndProcessInfo(self.handle, timeout_ms, info, c_void_p())
        except HcsError as e:
            raise self._failed(call, e) from None
        return info

    def _failed(self, call: str, e: HcsError) -> HcsError:
        if e.hresult == OPERATION_TIMEOUT:
            # The call keeps running inside HCS; cancelling is documented as
            # not implemented (HcsCancelOperation's page) but is what hcsshim
            # does (internal/hcs/v2/operation.go).
            try:
                _cc.HcsCancelOperation(self.handle)
            except HcsError as c:
                if c.hresult != E_NOTIMPL:
                    raise
        return HcsError(call, e.hresult, e.document)


def _run(call: str, fn, first, *rest, timeout_ms: int = INFINITE) -> str | None:
    """fn(first, operation, *rest), waited for.  Every call wrapped this way
    takes its operation second."""
    with Operation() as op:
        fn(first, op.handle, *rest)
        return op.wait(call, timeout_ms)


def _submit(fn, first, *rest) -> None:
    # Shutdown/terminate as hcsshim sends them: HCS finishes the request after
    # the operation is closed; the SystemExited event reports the end.
    with Operation() as op:
        fn(first, op.handle, *rest)


# ---- compute systems ----------------------------------------------------------

class _Callbacks:
    _key: int | None = None

    def set_callback(self, handler: Callable[[Event], None]) -> None:
        """Events of this handle go to handler(Event) on an HCS thread until close()."""
        key = registry.add(handler)
        try:
            self._set_callback(0, key, _on_event)
        except BaseException:
            registry.remove(key)
            raise
        self._key = key

    def _forget_callback(self) -> None:
        registry.remove(self._key)
        self._key = None


class ComputeSystem(_Callbacks, Closing):
    def __init__(self, handle: int, id: str):
        self.handle = handle
        self.id = id

    def _set_callback(self, options, key, thunk):
        _cc.HcsSetComputeSystemCallback(self.handle, options, key, thunk)

    def start(self, timeout_ms: int = CREATE_TIMEOUT_MS) -> None:
        _run("HcsStartComputeSystem", _cc.HcsStartComputeSystem, self.handle, None, timeout_ms=timeout_ms)

    def shutdown(self) -> None:
        """Graceful stop, submitted: the SystemExited event tells the end."""
        _submit(_cc.HcsShutDownComputeSystem, self.handle, None)

    def terminate(self, wait_ms: int | None = None) -> None:
        """Submitted as shutdown() is; with wait_ms, waited for, and raises (already stopped
        included)."""
        if wait_ms is None:
            _submit(_cc.HcsTerminateComputeSystem, self.handle, None)
        else:
            _run("HcsTerminateComputeSystem", _cc.HcsTerminateComputeSystem, self.handle, None, timeout_ms=wait_ms)

    def create_process(self, parameters: dict | str, timeout_ms: int = INFINITE) -> Process:
        params = parameters if isinstance(parameters, str) else json.dumps(parameters)
        handle = c_void_p()
        with Operation() as op:
            _cc.HcsCreateProcess(self.handle, params, op.handle, None, handle)
            process = Process(handle.value)
            try:
                info = op.wait_process("HcsCreateProcess", timeout_ms)
            except HcsError as e:
                # Seen on WS2022: the wait fails although HCS returned a live
                # process; its stdio is still there to fetch, as hcsshim does
                # (internal/hcs/v2/system.go, createProcess), but only from a handle:
                # without one nothing started, and HcsGetProcessInfo(NULL) is no question.
                if not process.handle:
                    raise
                try:
                    info = process._query_info()
                except HcsError:
                    process.close()
                    raise e from None
        process._adopt(info)
        return process

    def open_process(self, pid: int) -> Process:
        handle = c_void_p()
        _cc.HcsOpenProcess(self.handle, pid, GENERIC_ALL, handle)
        process = Process(handle.value)
        process.pid = pid
        return process

    def close(self) -> None:
        """Closes the handle; no callback runs after this returns: closing drains those in
        flight (hcsshim internal/hcs/v2/system.go, CloseCtx)."""
        if self.handle:
            _cc.HcsCloseComputeSystem(self.handle)
            self.handle = None
            self._forget_callback()


def create_compute_system(id: str, document: dict | str, timeout_ms: int = CREATE_TIMEOUT_MS) -> ComputeSystem:
    """Creates (not starts) a system.  A system whose creation failed after HCS
    handed out a handle is terminated and closed before the error propagates."""
    doc = document if isinstance(document, str) else json.dumps(document)
    handle = c_void_p()
    with Operation() as op:
        _cc.HcsCreateComputeSystem(id, doc, op.handle, None, handle)
        system = ComputeSystem(handle.value, id)
        try:
            op.wait("HcsCreateComputeSystem", timeout_ms)
        except HcsError:
            discard(system)
            raise
    return system


def discard(system: ComputeSystem) -> None:
    """Terminates (without waiting) and closes a system that will not be used."""
    try:
        system.terminate()
    except HcsError as e:
        if not is_already_stopped(e):
            log.warning("terminating a half-created compute system: %s", e.message)
    finally:
        system.close()


def open_compute_system(id: str) -> ComputeSystem:
    handle = c_void_p()
    _cc.HcsOpenComputeSystem(id, GENERIC_ALL, handle)
    return ComputeSystem(handle.value, id)


def enumerate_compute_systems(query: dict | None = None) -> list[dict]:
    """[{"Id", "SystemType", "Owner", "State", ...}], filtered by a SystemQuery
    such as {"Owners": ["nspawn"]}."""
    doc = _run("HcsEnumerateComputeSystems", _cc.HcsEnumerateComputeSystems,
               json.dumps(query) if query is not None else None)
    return json.loads(doc) if doc else []


# ---- processes --------------------------------------------------------------------

def stdio_handle(handle) -> int | None:
    """NULL and INVALID_HANDLE_VALUE both mean "no such stream" (hcsshim
    internal/hcs/v2/utils.go, makeOpenFiles)."""
    return None if handle in (None, 0, INVALID_HANDLE_VALUE) else handle


class StdioHandles:
    """The stdio pipe handles of a process (ints for kernel32.read/write, or None), the same
    in both API generations; the class using it supplies modify() (HcsModifyProcess)."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None

    def close_stdin(self) -> None:
        """End of input: tell HCS (only useful while the process runs), then close our end."""
        try:
            self.modify({"Operation": "CloseHandle", "CloseHandle": {"Handle": "StdIn"}})
        except HcsError as e:
            if not is_already_stopped(e):
                raise
        finally:
            self._close_pipe("stdin")

    def _close_pipe(self, name: str) -> None:
        handle = getattr(self, name)
        if handle is not None:
            setattr(self, name, None)
            kernel32.close_handle(handle)

    def close_stdio(self) -> None:
        for name in ("stdin", "stdout", "stderr"):
            self._close_pipe(name)


class Process(_Callbacks, StdioHandles, Closing):
    """A process and its stdio pipe handles."""

    pid: int = 0

    def __init__(self, handle: int):
        self.handle = handle

    def _adopt(self, info: HCS_PROCESS_INFORMATION) -> None:
        self.pid = info.ProcessId
        self.stdin, self.stdout, self.stderr = map(stdio_handle, (info.StdInput, info.StdOutput, info.StdError))

    def _query_info(self) -> HCS_PROCESS_INFORMATION:
        with Operation() as op:
            _cc.HcsGetProcessInfo(self.handle, op.handle)
            return op.wait_process("HcsGetProcessInfo")

    def _set_callback(self, options, key, thunk):
        _cc.HcsSetProcessCallback(self.handle, options, key, thunk)

    def set_callback(self, handler: Callable[[Event], None]) -> None:
        """As for a system; and an exit before this call sent no event (HCS keeps none for a
        callback registered later), so the state is asked once and an exit already there is
        handed to handler as its event, so that nobody waits forever for it."""
        super().set_callback(handler)
        status = self.properties()
        if status.get("Exited"):
            registry.dispatch(self._key, Event(EVENT_PROCESS_EXITED, json.dumps(status)))

    def signal(self, name: str) -> None:
        """CtrlC, CtrlBreak, CtrlClose, CtrlLogOff or CtrlShutdown.  Some images
        block here until the process exits: call from a worker thread."""
        _run("HcsSignalProcess", _cc.HcsSignalProcess, self.handle, json.dumps({"Signal": name}))

    def terminate(self) -> None:
        _run("HcsTerminateProcess", _cc.HcsTerminateProcess, self.handle, None)

    def properties(self) -> dict:
        """ProcessStatus: {"ProcessId", "Exited", "ExitCode", "LastWaitResult"}."""
        doc = _run("HcsGetProcessProperties", _cc.HcsGetProcessProperties, self.handle, None)
        return json.loads(doc) if doc else {}

    def modify(self, request: dict) -> None:
        _run("HcsModifyProcess", _cc.HcsModifyProcess, self.handle, json.dumps(request))

    def close(self) -> None:
        """Closes the stdio handles still held, then the process handle.
        Join threads reading the pipes first."""
        self.close_stdio()
        if self.handle:
            _cc.HcsCloseProcess(self.handle)
            self.handle = None
            self._forget_callback()
