"""vmcompute.dll: the undocumented v1 HCS API (prototypes as hcsshim's
internal/vmcompute/vmcompute.go declares them), the graph-driver layer
functions (internal/wclayer), and HNSCall (HNS v1 networking).

v1 calls answer ERROR_VMCOMPUTE_OPERATION_PENDING and finish with a
notification; the wrappers here wait for it, so callers see plain blocking
calls that raise HcsError.
"""

from __future__ import annotations

import ctypes
import json
import threading
import time
import uuid
from ctypes import POINTER, Structure, byref, c_int32, c_size_t, c_uint32, c_void_p, c_wchar, c_wchar_p
from typing import Callable, Sequence

from . import kernel32
from .computecore import HCS_PROCESS_INFORMATION, StdioHandles, registry, stdio_handle
from .errors import E_FAIL, OPERATION_PENDING_V1, OPERATION_TIMEOUT, HcsError, fails
from .loader import FUNCTYPE, Bindings, Closing, sdk, take_string

NOTIFY_SYSTEM_EXITED = 0x00000001
NOTIFY_CREATE_COMPLETED = 0x00000002
NOTIFY_START_COMPLETED = 0x00000003
NOTIFY_PROCESS_EXITED = 0x00010000
NOTIFY_SERVICE_DISCONNECT = 0x01000000
CREATE_TIMEOUT_MS = 240_000
_UNEXPECTED_EXIT = 0xC0370106
_SERVICE_DISCONNECT = 0x8037011E
FILTER_DRIVER = 1

NOTIFICATION_CALLBACK = FUNCTYPE(None, c_uint32, c_void_p, c_int32, c_void_p)


GUID = sdk("shared.guiddef").GUID


def guid(value: uuid.UUID | str) -> GUID:
    return GUID.from_buffer_copy(uuid.UUID(str(value)).bytes_le)


def guid_uuid(value: GUID) -> uuid.UUID:
    return uuid.UUID(bytes_le=bytes(value))


class DriverInfo(Structure):
    _fields_ = [("Flavour", c_int32), ("HomeDir", c_wchar_p)]


class WC_LAYER_DESCRIPTOR(Structure):
    _fields_ = [("LayerId", GUID), ("Flags", c_uint32), ("Path", c_wchar_p)]


@NOTIFICATION_CALLBACK
def _on_notification(kind, context, status, data):
    registry.dispatch(context, kind, status, ctypes.wstring_at(data) if data else None)


# ---- prototypes and error checks ----------------------------------------------

def _v1(result_index: int, outputs: tuple[int, ...] = (), pending_ok: bool = False):
    """Takes (and CoTaskMemFrees, as hcsshim does) the `result` error document
    and any output strings; returns the first output, else whether the call
    went pending."""
    def factory(export):
        def check(hr, func, args):
            result = take_string(args[result_index], kernel32.co_task_mem_free)
            outs = [take_string(args[i], kernel32.co_task_mem_free) for i in outputs]
            pending = (hr & 0xFFFFFFFF) == OPERATION_PENDING_V1
            if hr < 0 and not (pending and pending_ok):
                raise HcsError(export, hr, result)
            return outs[0] if outputs else pending
        return check
    return factory


def _hns(export):
    def check(hr, func, args):
        response = take_string(args[3], kernel32.co_task_mem_free)
        if hr < 0:
            raise HcsError(export, hr, response)
        return response
    return check


_H = c_void_p
_OUT = POINTER(c_void_p)
_HR = c_int32
_DRIVER = POINTER(DriverInfo)
_LAYERS = POINTER(WC_LAYER_DESCRIPTOR)
_vm = Bindings("vmcompute.dll", {
    "HcsEnumerateComputeSystems": (_HR, [c_wchar_p, _OUT, _OUT], _v1(2, (1,))),
    "HcsCreateComputeSystem": (_HR, [c_wchar_p, c_wchar_p, _H, _OUT, _OUT], _v1(4, pending_ok=True)),
    "HcsOpenComputeSystem": (_HR, [c_wchar_p, _OUT, _OUT], _v1(2)),
    "HcsCloseComputeSystem": (_HR, [_H], fails),
    "HcsStartComputeSystem": (_HR, [_H, c_wchar_p, _OUT], _v1(2, pending_ok=True)),
    "HcsShutdownComputeSystem": (_HR, [_H, c_wchar_p, _OUT], _v1(2, pending_ok=True)),
    "HcsTerminateComputeSystem": (_HR, [_H, c_wchar_p, _OUT], _v1(2, pending_ok=True)),
    "HcsRegisterComputeSystemCallback": (_HR, [_H, NOTIFICATION_CALLBACK, c_void_p, _OUT], fails),
    "HcsUnregisterComputeSystemCallback": (_HR, [_H], fails),
    "HcsCreateProcess": (_HR, [_H, c_wchar_p, POINTER(HCS_PROCESS_INFORMATION), _OUT, _OUT], _v1(4)),
    "HcsOpenProcess": (_HR, [_H, c_uint32, _OUT, _OUT], _v1(3)),
    "HcsCloseProcess": (_HR, [_H], fails),
    "HcsTerminateProcess": (_HR, [_H, _OUT], _v1(1)),
    "HcsSignalProcess": (_HR, [_H, c_wchar_p, _OUT], _v1(2)),
    "HcsGetProcessProperties": (_HR, [_H, _OUT, _OUT], _v1(2, (1,))),
    "HcsModifyProcess": (_HR, [_H, c_wchar_p, _OUT], _v1(2)),
    "HcsRegisterProcessCallback": (_HR, [_H, NOTIFICATION_CALLBACK, c_void_p, _OUT], fails),
    "HcsUnregisterProcessCallback": (_HR, [_H], fails),
    # The width of the layer count and mount-path length is undocumented
    # (hostcompute_nspawn passes 32 bits, hcsshim a pointer-sized integer):
    # size_t satisfies both readings on x64.
    "NameToGuid": (_HR, [c_wchar_p, POINTER(GUID)], fails),
    "CreateSandboxLayer": (_HR, [_DRIVER, c_wchar_p, c_wchar_p, _LAYERS, c_size_t], fails),
    "ActivateLayer": (_HR, [_DRIVER, c_wchar_p], fails),
    "PrepareLayer": (_HR, [_DRIVER, c_wchar_p, _LAYERS, c_size_t], fails),
    "GetLayerMountPath": (_HR, [_DRIVER, c_wchar_p, POINTER(c_size_t), POINTER(c_wchar)], fails),
    "UnprepareLayer": (_HR, [_DRIVER, c_wchar_p], fails),
    "DeactivateLayer": (_HR, [_DRIVER, c_wchar_p], fails),
    "DestroyLayer": (_HR, [_DRIVER, c_wchar_p], fails),
    "ImportLayer": (_HR, [_DRIVER, c_wchar_p, c_wchar_p, _LAYERS, c_size_t], fails),
    "HNSCall": (_HR, [c_wchar_p, c_wchar_p, c_wchar_p, _OUT], _hns),
})
BINDINGS = (_vm,)


# ---- notifications --------------------------------------------------------------

class Notifications:
    """What a v1 callback has reported, for blocking waits (as hcsshim's
    internal/hcs/waithelper.go waits)."""

    def __init__(self, listener: Callable[[int, int, str | None], None] | None = None):
        self._cond = threading.Condition()
        self._seen: list[tuple[int, int, str | None]] = []
        self._listener = listener

    def __call__(self, kind: int, status: int, data: str | None) -> None:
        with self._cond:
            self._seen.append((kind, status, data))
            self._cond.notify_all()
        if self._listener:
            self._listener(kind, status, data)

    def wait(self, call: str, kind: int, timeout_ms: int | None) -> str | None:
        """The data of notification `kind`; HcsError for its failure status, a
        timeout, an exit of the system while waiting for something else, or a
        lost service connection."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        with self._cond:
            while True:
                for k, status, data in self._seen:
                    if k == kind:
                        # An unexpected exit is how v1 reports many a normal end of a system:
                        # hcsshim takes it for one (internal/hcs/waithelper.go).
                        normal_end = k == NOTIFY_SYSTEM_EXITED and status & 0xFFFFFFFF == _UNEXPECTED_EXIT
                        if status < 0 and not normal_end:
                            raise HcsError(call, status, data)
                        return data
                    if k == NOTIFY_SERVICE_DISCONNECT:
                        raise HcsError(call, _SERVICE_DISCONNECT, data)
                    if k == NOTIFY_SYSTEM_EXITED:
                        raise HcsError(call, _UNEXPECTED_EXIT, data)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise HcsError(call, OPERATION_TIMEOUT)
                self._cond.wait(remaining)


class _Registered(Closing):
    """A handle with one v1 callback, unregistered before the handle closes."""

    _close_export: str
    _unregister_export: str

    def __init__(self, handle: int, listener=None):
        self.handle = handle
        self.notifications = Notifications(listener)
        self._key = registry.add(self.notifications)
        self._callback = None

    def _register(self, export: str) -> None:
        """A handle whose callback cannot be registered is of no use: it is stopped (when
        `_stop` names how) and closed before the error propagates."""
        callback = c_void_p()
        try:
            getattr(_vm, export)(self.handle, _on_notification, self._key, callback)
        except BaseException:
            try:
                self._stop()
            except HcsError:
                pass  # already stopped or gone
            finally:
                self.close()
            raise
        self._callback = callback.value

    def _stop(self) -> None:
        pass

    def close(self) -> None:
        """Unregister (waits for callbacks in flight; hold no lock they need), then close."""
        if self._callback:
            getattr(_vm, self._unregister_export)(self._callback)
            self._callback = None
        registry.remove(self._key)
        if self.handle:
            getattr(_vm, self._close_export)(self.handle)
            self.handle = None


# ---- compute systems ---------------------------------------------------------------

class V1ComputeSystem(_Registered):
    _close_export = "HcsCloseComputeSystem"
    _unregister_export = "HcsUnregisterComputeSystemCallback"

    def __init__(self, handle: int, id: str, listener=None, owned: bool = False):
        """owned: this call created the system, so a failure to watch it terminates it."""
        super().__init__(handle, listener)
        self.id = id
        self._owned = owned
        self._register("HcsRegisterComputeSystemCallback")

    def _stop(self) -> None:
        if self._owned:
            self.terminate()

    def start(self, timeout_ms: int = CREATE_TIMEOUT_MS) -> None:
        if _vm.HcsStartComputeSystem(self.handle, None, c_void_p()):
            self.notifications.wait("HcsStartComputeSystem", NOTIFY_START_COMPLETED, timeout_ms)

    def shutdown(self) -> None:
        """Accepted when this returns; wait_exited() tells the end."""
        _vm.HcsShutdownComputeSystem(self.handle, None, c_void_p())

    def terminate(self) -> None:
        _vm.HcsTerminateComputeSystem(self.handle, None, c_void_p())

    def wait_exited(self, timeout_ms: int | None = None) -> str | None:
        return self.notifications.wait("HcsWaitForSystemExit", NOTIFY_SYSTEM_EXITED, timeout_ms)

    def create_process(self, parameters: dict | str, listener=None) -> V1Process:
        info = HCS_PROCESS_INFORMATION()
        handle = c_void_p()
        params = parameters if isinstance(parameters, str) else json.dumps(parameters)
        _vm.HcsCreateProcess(self.handle, params, info, handle, c_void_p())
        return V1Process(handle.value, listener, info)

    def open_process(self, pid: int, listener=None) -> V1Process:
        handle = c_void_p()
        _vm.HcsOpenProcess(self.handle, pid, handle, c_void_p())
        process = V1Process(handle.value, listener)
        process.pid = pid
        return process


def _json(value) -> str | None:
    return None if value is None else value if isinstance(value, str) else json.dumps(value)


def create_compute_system(id: str, document: dict | str, timeout_ms: int = CREATE_TIMEOUT_MS,
                          listener=None) -> V1ComputeSystem:
    """Creates (not starts) a system and waits for SystemCreateCompleted.  On a
    failure after HCS handed out a handle, terminates and closes it first."""
    handle = c_void_p()
    pending = _vm.HcsCreateComputeSystem(id, _json(document), None, handle, c_void_p())
    system = V1ComputeSystem(handle.value, id, listener, owned=True)
    if pending:
        try:
            system.notifications.wait("HcsCreateComputeSystem", NOTIFY_CREATE_COMPLETED, timeout_ms)
        except HcsError:
            _discard(system)
            raise
    return system


def _discard(system: V1ComputeSystem) -> None:
    try:
        system.terminate()
    except HcsError:
        pass  # already stopped or gone: nothing left to stop
    finally:
        system.close()


def open_compute_system(id: str, listener=None) -> V1ComputeSystem:
    handle = c_void_p()
    _vm.HcsOpenComputeSystem(id, handle, c_void_p())
    return V1ComputeSystem(handle.value, id, listener)


def enumerate_compute_systems(query: dict | None = None) -> list[dict]:
    doc = _vm.HcsEnumerateComputeSystems(_json(query), c_void_p(), c_void_p())
    return json.loads(doc) if doc else []


# ---- processes --------------------------------------------------------------------

class V1Process(_Registered, StdioHandles):
    _close_export = "HcsCloseProcess"
    _unregister_export = "HcsUnregisterProcessCallback"
    pid: int = 0

    def __init__(self, handle: int, listener=None, info: HCS_PROCESS_INFORMATION | None = None):
        """info: what HcsCreateProcess handed out (pid and stdio), owned from here on."""
        super().__init__(handle, listener)
        if info is not None:
            self.pid = info.ProcessId
            self.stdin, self.stdout, self.stderr = map(stdio_handle, (info.StdInput, info.StdOutput, info.StdError))
        self._created = info is not None
        self._register("HcsRegisterProcessCallback")
        # An exit before the callback was registered sent no notification (HCS keeps none for
        # a callback registered later): asked once, so that nobody waits forever for it.
        try:
            exited = self.properties().get("Exited")
        except BaseException:
            self.close()
            raise
        if exited:
            self.notifications(NOTIFY_PROCESS_EXITED, 0, None)

    def _stop(self) -> None:
        if self._created:
            self.terminate()

    def wait_exited(self, timeout_ms: int | None = None) -> int:
        """Waits for ProcessExited, then reads the exit code as hcsshim does."""
        self.notifications.wait("HcsWaitForProcessExit", NOTIFY_PROCESS_EXITED, timeout_ms)
        return self.properties()["ExitCode"]

    def properties(self) -> dict:
        doc = _vm.HcsGetProcessProperties(self.handle, c_void_p(), c_void_p())
        return json.loads(doc) if doc else {}

    def signal(self, name: str) -> None:
        _vm.HcsSignalProcess(self.handle, json.dumps({"Signal": name}), c_void_p())

    def terminate(self) -> None:
        _vm.HcsTerminateProcess(self.handle, c_void_p())

    def modify(self, request: dict) -> None:
        _vm.HcsModifyProcess(self.handle, json.dumps(request), c_void_p())

    def close(self) -> None:
        """Closes stdio handles still held, unregisters, closes: hcsshim's order
        (internal/hcs/process.go, Close)."""
        self.close_stdio()
        super().close()


# ---- layers ----------------------------------------------------------------------

_prepare_lock = threading.Lock()

# The parent layers as (layer id, folder), top-most first, base last (the parent, then its
# layerchain.json); a layer's id is name_to_guid of its folder name.
Parents = Sequence[tuple[uuid.UUID | str, str]]


def _driver(home: str) -> DriverInfo:
    """FilterDriver with HomeDir = the layers' root and id = a folder name
    (Docker's way), or HomeDir "" and id = the full path (hcsshim's)."""
    return DriverInfo(FILTER_DRIVER, home)


def name_to_guid(name: str) -> uuid.UUID:
    out = GUID()
    _vm.NameToGuid(name, byref(out))
    return guid_uuid(out)


def layer_descriptors(parents: Parents):
    array = (WC_LAYER_DESCRIPTOR * len(parents))()
    for entry, (layer_id, path) in zip(array, parents):
        entry.LayerId = guid(layer_id)
        entry.Path = path
    return array


def import_layer(home: str, id: str, source: str, parents: Parents) -> None:
    """The layer in transport form in `source` imported as layer `id` of `home` over
    `parents`: what computestorage's HcsImportLayer does, on builds before it."""
    layers = layer_descriptors(parents)
    _vm.ImportLayer(_driver(home), id, source, layers, len(layers))


def create_sandbox_layer(home: str, id: str, parent_id: str | None, parents: Parents) -> None:
    layers = layer_descriptors(parents)
    _vm.CreateSandboxLayer(_driver(home), id, parent_id, layers, len(layers))


def activate_layer(home: str, id: str) -> None:
    _vm.ActivateLayer(_driver(home), id)


def prepare_layer(home: str, id: str, parents: Parents) -> None:
    """Serialized process-wide: concurrent PrepareLayer calls time out on Windows (hcsshim
    holds a global lock for that: internal/wclayer/preparelayer.go)."""
    layers = layer_descriptors(parents)
    with _prepare_lock:
        _vm.PrepareLayer(_driver(home), id, layers, len(layers))


def get_layer_mount_path(home: str, id: str) -> str | None:
    """The volume path of an activated scratch layer (\\\\?\\Volume{...}\\), or None."""
    driver = _driver(home)
    length = c_size_t(0)
    _vm.GetLayerMountPath(driver, id, byref(length), None)
    if not length.value:
        return None
    buffer = ctypes.create_unicode_buffer(length.value)
    _vm.GetLayerMountPath(driver, id, byref(length), buffer)
    return buffer.value or None


def unprepare_layer(home: str, id: str) -> None:
    _vm.UnprepareLayer(_driver(home), id)


def deactivate_layer(home: str, id: str) -> None:
    _vm.DeactivateLayer(_driver(home), id)


def destroy_layer(home: str, id: str) -> None:
    _vm.DestroyLayer(_driver(home), id)


# ---- HNS v1 -----------------------------------------------------------------------

def hns_call(method: str, path: str, request: dict | str | None = None):
    """An HNS v1 request, as hcsshim's internal/hns/hnsfuncs.go makes them; returns the
    reply's Output.  A reply with Success false raises HcsError carrying the reply
    (is_not_found knows HNS's "Element not found")."""
    body = "" if request is None else _json(request)
    response = _vm.HNSCall(method, path, body, c_void_p())
    reply = json.loads(response) if response else {}
    if not reply.get("Success"):
        raise HcsError("HNSCall", E_FAIL, response)
    return reply.get("Output")
