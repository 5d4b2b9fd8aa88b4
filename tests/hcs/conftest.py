"""`nspawn run` end to end against the simulated HCS: the CLI runs in a fresh interpreter that
loads the simulator, which writes its ledger when that interpreter exits."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from nspawn.backends.hcs.native.loader import SIMULATOR_ENV
from tests.conftest import ROOT, nspawn
from tests.hcs_sim.fixtures import sim_library  # noqa: F401 (fixture)
from tests.hcs_sim.ledger import FAULTS_ENV, LEDGER_ENV, CallRecords, live


class Run(CallRecords):
    """A finished `nspawn run`: its exit code, output, and the ledger its simulator left."""

    def __init__(self, proc, ledger: dict | None):
        self.returncode = proc.returncode
        self.stdout, self.stderr = proc.stdout, proc.stderr
        self.ledger = ledger or {}

    def _records(self) -> list[dict]:
        return self.ledger.get("calls", [])

    @property
    def live(self) -> dict:
        return live(self.ledger)

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


class Host:
    """A layer store (base ← parent, chained by layerchain.json) and a process directory."""

    def __init__(self, library: pathlib.Path, tmp: pathlib.Path):
        self.library = library
        self.tmp = tmp
        self.layers = tmp / "layers"
        self.base = self.layers / "base"
        self.parent = self.layers / "parent"
        self.job = tmp / "job"
        for d in (self.base / "UtilityVM", self.parent, self.job):
            d.mkdir(parents=True)
        (self.parent / "layerchain.json").write_text(json.dumps([str(self.base)]))
        self.ledger_path = tmp / "ledger.json"

    def script(self, name: str, body: str) -> str:
        path = self.job / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return name

    def config(self, **doc) -> pathlib.Path:
        full = {"backend": "hcs", "parent_layer_directory": str(self.parent), "process_directory": str(self.job),
                "mapped_directory": "C:\\job", **doc}
        path = self.tmp / "config.json"
        path.write_text(json.dumps(full))
        return path

    def env(self, faults: str | None) -> dict:
        return {SIMULATOR_ENV: str(self.library), LEDGER_ENV: str(self.ledger_path), FAULTS_ENV: faults or ""}

    def _ledger(self) -> dict | None:
        if not self.ledger_path.exists():
            return None
        led = json.loads(self.ledger_path.read_text())
        self.ledger_path.unlink()
        return led

    def run(self, *args, faults: str | None = None, input: str | None = None, env: dict | None = None, **doc) -> Run:
        proc = nspawn("run", "-c", str(self.config(**doc)), *args, input=input, env={**self.env(faults), **(env or {})})
        return Run(proc, self._ledger())

    def run_signalled(self, signum: int, ready: str, *args, **doc) -> Run:
        """Starts the run, sends `signum` once its output shows `ready`, and waits for its end."""
        proc = subprocess.Popen([sys.executable, "-m", "nspawn", "run", "-c", str(self.config(**doc)), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                env={**os.environ, **self.env(None)}, cwd=ROOT)
        try:
            seen = ""
            while ready not in seen:
                line = proc.stdout.readline()
                assert line, f"the run ended before {ready!r}: {proc.stderr.read()}"
                seen += line
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        proc.stdout, proc.stderr = seen + out, err
        return Run(proc, self._ledger())

    def scratch_folders(self) -> list[str]:
        return sorted(p.name for p in self.layers.iterdir() if p.name not in ("base", "parent"))


@pytest.fixture
def host(sim_library, tmp_path) -> Host:
    return Host(sim_library, tmp_path)


def gone(pid: int, timeout: float = 5.0) -> bool:
    """The process no longer runs (a zombie counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def sigterm_and_int():
    return pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
