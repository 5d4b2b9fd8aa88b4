"""One simulated HCS host shared by several processes: the launchers started on it, `nspawn ps`
and `nspawn cleanup`, and the backend's sweep. The simulated service keeps its registry in a
state directory (tests/hcs_sim/state.c), so they all see one HCS, as on Windows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.conftest import ROOT, nspawn
from tests.hcs_sim.ledger import FAULTS_ENV, STATE_ENV, persisted


class Service:
    """One simulated HCS host: its state, nspawn's journals, and launchers started on it."""

    def __init__(self, host):
        self.host = host
        self.state = host.tmp / "hcs-service"
        self.journals = host.tmp / "journals"
        self.state.mkdir()
        self.env = {**host.env(None), STATE_ENV: str(self.state), "NSPAWN_STATE_DIR": str(self.journals)}

    def launch(self, api: str, network: str):
        """A launcher whose payload prints its pid and sleeps; (launcher, payload pid)."""
        script = self.host.script("sleeper.sh", "echo $$\nexec sleep 300\n")
        config = self.host.config(process_executable=script, hcs_api=api, network=network)
        launcher = subprocess.Popen([sys.executable, "-m", "nspawn", "run", "-c", str(config)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    text=True, env={**os.environ, **self.env}, cwd=ROOT)
        line = launcher.stdout.readline()
        assert line.strip().isdigit(), f"no payload pid: {line!r} {launcher.stderr.read() if not line else ''}"
        return launcher, int(line)

    def killed_and_unjournaled(self, api: str, network: str) -> str:
        """A launcher SIGKILLed mid-run whose journal is then deleted; its container id."""
        launcher, _ = self.launch(api, network)
        kill(launcher)
        [journal] = self.journals.glob("*.journal")
        journal.unlink()
        return journal.stem

    def nspawn(self, *args):
        return nspawn(*args, env=self.env)

    def ps(self) -> list[dict]:
        result = self.nspawn("ps", "--json")
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    def sweep(self, live: set[str] = frozenset(), faults: str = "") -> list[str]:
        """The backend's sweep(live) run as `nspawn cleanup` runs it, in a process of its own;
        SweepError's message and what it removed when it raises."""
        code = ("import json, sys\nfrom nspawn.backends import hcs\nfrom nspawn.backends.hcs.leftovers import SweepError\n"
                "try:\n    print(json.dumps(hcs.sweep(set(sys.argv[1:]))))\n"
                "except SweepError as e:\n    sys.exit(json.dumps([str(e), e.removed]))\n")
        result = subprocess.run([sys.executable, "-c", code, *live], capture_output=True, text=True,
                                env={**os.environ, **self.env, FAULTS_ENV: faults}, cwd=ROOT, timeout=60)
        if result.returncode == 1 and result.stderr.startswith("["):
            raise SweepFailed(*json.loads(result.stderr))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def left(self) -> dict:
        """What the service still holds, and the scratch folders beside the parent layer."""
        found = persisted(self.state)
        if self.host.scratch_folders():
            found["scratch folders"] = self.host.scratch_folders()
        return found


class SweepFailed(Exception):
    def __init__(self, message: str, removed: list[str]):
        super().__init__(message)
        self.message, self.removed = message, removed


def kill(launcher) -> None:
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    launcher.stdout.close()
    launcher.stderr.close()
