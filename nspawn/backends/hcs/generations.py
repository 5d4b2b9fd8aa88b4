"""The seam between the two HCS API generations: v2 (computecore.dll, operations and events)
and v1 (vmcompute.dll, pending results and notifications), behind the same few steps the
runtime takes. Each step blocks until HCS has finished it: no call is left running."""

from __future__ import annotations

import json
import threading

from nspawn.backends.hcs import HcsPlan, documents, layers
from nspawn.backends.hcs.native.errors import HcsError, is_already_stopped, is_not_found, is_pending, is_process_gone

# hcsshim's wait after shutdown, then after terminate (cmd/containerd-shim-runhcs-v1/task_hcs.go)
STOP_WAIT_SECONDS = 30


def choose(api: str) -> str:
    """The generation of a plan's api (nspawn.backends.hcs.api_route): `auto` is v2 where
    computecore.dll loads, v1 otherwise."""
    from nspawn.backends.hcs.native import loader
    from nspawn.backends.hcs.native.errors import LibraryUnavailable

    if api != "auto":
        return api
    try:
        loader.load("computecore.dll")
    except LibraryUnavailable:
        return "v1"
    return "v2"


class Exit:
    """An exit seen by a callback on an HCS thread, waited for by the runtime."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.data: str | None = None

    def set(self, data: str | None = None) -> None:
        self.data = data
        self.event.set()


def process_exit_code(status: dict) -> int | None:
    """ProcessStatus.ExitCode, valid only when Exited and LastWaitResult is 0 (hcsshim's
    internal/hcs/v2/process.go reports -1 otherwise)."""
    if status.get("Exited") and not status.get("LastWaitResult") and isinstance(status.get("ExitCode"), int):
        return status["ExitCode"]
    return None


def _tolerate(check, action) -> None:
    try:
        action()
    except HcsError as e:
        if not check(e):
            raise


def _gone(e: HcsError) -> bool:
    return is_already_stopped(e) or is_not_found(e)


def _accepted(e: HcsError) -> bool:
    return _gone(e) or is_pending(e)


class Generation:
    api: str

    def start(self, system) -> None:
        system.start()

    def stop(self, system, exited: Exit) -> None:
        """Shutdown, then terminate when the shutdown failed, whatever the error, or did not
        end the system in time, as hcsshim's shim closes a task
        (cmd/containerd-shim-runhcs-v1/task_hcs.go); "already stopped", "not found" and
        ERROR_VMCOMPUTE_OPERATION_PENDING are no failure of either (internal/hcs/system.go).
        The exit notification (or event) tells the end, as both submit the request and
        return: v2 closes the operation unwaited, v1 answers pending. Raises only for a
        terminate that failed."""
        if exited.event.is_set():
            return
        try:
            _tolerate(_accepted, system.shutdown)
        except HcsError:
            pass  # a shutdown refused is what terminate is for
        else:
            if exited.event.wait(STOP_WAIT_SECONDS):
                return
        if exited.event.is_set():
            return
        _tolerate(_accepted, system.terminate)
        exited.event.wait(STOP_WAIT_SECONDS)

    def terminate(self, system) -> None:
        """Terminates the system and waits for its end, for a rollback that has no exit
        callback of its own to wait on; a system already stopped or gone is no error."""
        _tolerate(_accepted, lambda: self._terminate_and_wait(system))


class V2(Generation):
    api = "v2"

    def __init__(self) -> None:
        from nspawn.backends.hcs.native import computecore

        self.cc = computecore

    def document(self, plan: HcsPlan, container_id: str, storage: documents.Storage, network: str | None) -> dict:
        return documents.v2_compute_system(plan, storage, network)

    def create(self, id: str, document: dict, exited: Exit):
        system = self.cc.create_compute_system(id, document)
        try:
            system.set_callback(lambda ev: ev.type in (self.cc.EVENT_SYSTEM_EXITED, self.cc.EVENT_SERVICE_DISCONNECT)
                                and exited.set(ev.data))
        except BaseException:
            self.cc.discard(system)
            raise
        return system

    def create_process(self, system, parameters: dict, exited: Exit):
        process = system.create_process(parameters)
        try:
            process.set_callback(lambda ev: ev.type in (self.cc.EVENT_PROCESS_EXITED, self.cc.EVENT_SERVICE_DISCONNECT)
                                 and exited.set(ev.data))
        except BaseException:
            _tolerate(is_process_gone, process.terminate)
            process.close()
            raise
        return process

    def exit_code(self, process, exited: Exit) -> int | None:
        status = json.loads(exited.data) if exited.data else {}
        code = process_exit_code(status)
        return code if code is not None else process_exit_code(process.properties())

    def open(self, id: str):
        return self.cc.open_compute_system(id)

    def _terminate_and_wait(self, system) -> None:
        system.terminate(STOP_WAIT_SECONDS * 1000)


class V1(Generation):
    api = "v1"

    def __init__(self) -> None:
        from nspawn.backends.hcs.native import vmcompute

        self.vm = vmcompute

    def document(self, plan: HcsPlan, container_id: str, storage: documents.Storage, network: str | None) -> dict:
        image = layers.utility_vm_image([path for _, path in storage.layers]) if plan.isolation == "hyperv" else None
        return documents.v1_compute_system(plan, container_id, storage, [network] if network else [], image)

    def _on(self, kinds, exited: Exit):
        return lambda kind, status, data: kind in kinds and exited.set(data)

    def create(self, id: str, document: dict, exited: Exit):
        return self.vm.create_compute_system(
            id, document, listener=self._on((self.vm.NOTIFY_SYSTEM_EXITED, self.vm.NOTIFY_SERVICE_DISCONNECT), exited))

    def create_process(self, system, parameters: dict, exited: Exit):
        return system.create_process(
            parameters, listener=self._on((self.vm.NOTIFY_PROCESS_EXITED, self.vm.NOTIFY_SERVICE_DISCONNECT), exited))

    def exit_code(self, process, exited: Exit) -> int | None:
        return process_exit_code(process.properties())

    def open(self, id: str):
        return self.vm.open_compute_system(id)

    def _terminate_and_wait(self, system) -> None:
        system.terminate()  # accepted; SystemExited tells the end
        system.wait_exited(STOP_WAIT_SECONDS * 1000)


GENERATIONS = {"v1": V1, "v2": V2}


def kill(generation, system_id: str, pid: int) -> None:
    """Terminates the process through fresh handles, so the kill cannot queue behind a signal
    still running on the first handle: HCS serializes them per handle (hcsshim
    internal/hcs/v2/process.go, Kill). An exited process is not an error."""
    def terminate() -> None:
        with generation.open(system_id) as system:
            process = system.open_process(pid)
            try:
                process.terminate()
            finally:
                process.close()
    _tolerate(lambda e: is_process_gone(e) or is_not_found(e), terminate)
