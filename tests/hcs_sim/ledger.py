"""Drives the simulator from tests: reset, read the ledger, inject faults.

The ledger lists what is alive inside the simulated HCS (systems, processes,
handles, stdio pipes handed out, returned strings not yet freed, layers,
endpoints, namespaces) and every call with the strings it was given.
"""

from __future__ import annotations

import ctypes
import json
import pathlib
import time

MODES = {"sync": 0, "async": 1, "accepted": 4, "unstarted": 6}
LEDGER_ENV = "NSPAWN_HCS_SIM_LEDGER"  # the simulator writes its ledger there when its process exits
FAULTS_ENV = "NSPAWN_HCS_SIM_FAULTS"  # faults for a simulator loaded by another process
STATE_ENV = "NSPAWN_HCS_SIM_STATE"  # where the simulated service keeps what outlives a process (state.c)


def live(led: dict) -> dict:
    """What a ledger shows still alive or leaked; empty after a correct teardown."""
    found = {key: led[key] for key in ("systems", "processes", "handles", "pipes", "layers",
                                        "endpoints", "namespaces", "free_errors") if led[key]}
    if led["strings"]:
        found["strings"] = led["strings"]
    return found


def persisted(state: pathlib.Path) -> dict:
    """What the simulated service in the state directory `state` still holds: compute
    systems, layers in any state, endpoints, namespaces; empty when nothing is left."""
    def load(name: str):
        path = state / name
        return json.loads(path.read_text()) if path.exists() else None

    net = load("net.json") or {}
    found = {
        "systems": [json.loads(p.read_text()) for p in sorted(state.glob("systems/*.json"))],
        "layers": [layer for layer in load("layers.json") or [] if layer["created"] or layer["activated"] or layer["prepared"]],
        "endpoints": net.get("endpoints"),
        "namespaces": net.get("namespaces"),
    }
    return {key: value for key, value in found.items() if value}


class CallRecords:
    """The calls a ledger records ({"call": "dll!Export", "args": [...]}), read through
    `_records()`: the simulator's live ledger, or one a finished process left."""

    def _records(self) -> list[dict]:
        raise NotImplementedError

    def calls(self, name: str | None = None) -> list[dict]:
        """Every recorded call, or those of one export ("HcsCreateProcess" or
        "vmcompute!HcsCreateProcess")."""
        records = self._records()
        if name is None:
            return records
        return [r for r in records if r["call"] == name or r["call"].split("!")[1] == name]

    def documents(self, name: str, index: int = -1) -> list:
        """The JSON argument at `index` of every recorded call of `name`, parsed."""
        return [json.loads(r["args"][index]) for r in self.calls(name) if r["args"] and r["args"][index]]


class Simulator(CallRecords):
    def __init__(self, path: pathlib.Path | str):
        self.path = str(path)
        lib = ctypes.CDLL(self.path)  # the same instance the bindings load
        lib.SimLedgerJson.restype = ctypes.c_void_p
        lib.SimLedgerJson.argtypes = []
        lib.SimFree.argtypes = [ctypes.c_void_p]
        lib.SimFailCall.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_char_p]
        lib.SimHangCall.argtypes = [ctypes.c_char_p]
        lib.SimSetOverlappedPipes.argtypes = [ctypes.c_int32]
        lib.SimReset.argtypes = []
        self._lib = lib

    def reset(self) -> None:
        """Kills simulated processes and forgets everything, faults included."""
        self._lib.SimReset()

    def ledger(self) -> dict:
        ptr = self._lib.SimLedgerJson()
        try:
            return json.loads(ctypes.string_at(ptr).decode())
        finally:
            self._lib.SimFree(ptr)

    def live(self) -> dict:
        """Everything still alive or leaked; empty after a correct teardown."""
        return live(self.ledger())

    def wait_clean(self, timeout: float = 5.0) -> dict:
        """live() once it is empty, or what is still alive after `timeout`
        (exits and stops complete on the simulator's threads)."""
        deadline = time.monotonic() + timeout
        while (found := self.live()) and time.monotonic() < deadline:
            time.sleep(0.01)
        return found

    def fail(self, call: str, hresult: int, mode: str = "sync", message: str | None = None) -> None:
        """Makes `call` ("HcsStartComputeSystem" or "vmcompute!HcsStartComputeSystem")
        fail with hresult: "sync" from the call itself, "async" from its
        operation (v2) or completion notification (v1), "accepted" doing its work all the
        same, "unstarted" (HcsCreateProcess) answering S_OK with no handle."""
        self._lib.SimFailCall(call.encode(), ctypes.c_int32(hresult & 0xFFFFFFFF).value, MODES[mode],
                              message.encode() if message else None)

    def hang(self, call: str) -> None:
        """Makes `call` never finish until its system/process ends or reset()."""
        self._lib.SimHangCall(call.encode())

    def overlapped_pipes(self, on: bool = True) -> None:
        """Pipe I/O answers ERROR_IO_PENDING like a FILE_FLAG_OVERLAPPED handle."""
        self._lib.SimSetOverlappedPipes(int(on))

    def _records(self) -> list[dict]:
        return self.ledger()["calls"]
