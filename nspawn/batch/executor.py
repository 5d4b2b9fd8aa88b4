"""Where jobs run. The batch sees an executor only through this small interface, so the local
pool below can be replaced by one that sends jobs to other machines:

    submit(job) -> concurrent.futures.Future[JobResult]   start now (admission has already
                                                           reserved its resources); the future
                                                           never fails for a failed job
    stop(signum)          ask every submitted, unfinished job to stop (politely, then firmly
                          after its grace); from any thread, never raises
    sample() -> {name: bytes}   memory in use by running jobs, where known (may be empty)
    close()               wait for the submitted jobs to end, then free the workers

Jobs and results are plain data (nspawn/batch/jobs.py); a remote executor runs
`nspawn.batch.run_job.run_job` (or `nspawn batch` itself) where the job runs.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from nspawn import backends
from nspawn.backends.contract import PROCESS
from nspawn.batch.jobs import Job, JobResult
from nspawn.batch.run_job import run_job
from nspawn.session import Stop


class Executor(Protocol):
    def submit(self, job: Job) -> "Future[JobResult]": ...

    def stop(self, signum: int) -> None: ...

    def sample(self) -> dict[str, int]: ...

    def close(self) -> None: ...


class Running:
    """A job running here: its stop, and its container's first process once started (sampled)."""

    def __init__(self) -> None:
        self.stop = Stop()
        self.init_pid: int | None = None

    def listener(self, event: str, details: dict) -> None:
        if event == PROCESS and self.init_pid is None:
            self.init_pid = details["pid"]


class LocalExecutor:
    """Runs each job on a worker thread of this process through `nspawn.run`.

    The backend's help for many runs (backends.many_runs: on Linux a fork server, forking the
    containers' first processes from a small process instead of this one) is started on the
    thread that makes the executor, which must outlive the jobs: their containers die with it
    (PR_SET_PDEATHSIG).
    """

    def __init__(self, workers: int):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nspawn-job")
        self._lock = threading.Lock()
        self._running: dict[str, Running] = {}
        self._stopped: int | None = None
        self._many = backends.many_runs()

    def submit(self, job: Job) -> "Future[JobResult]":
        running = Running()
        with self._lock:
            self._running[job.name] = running
            if self._stopped is not None:
                running.stop.ask(self._stopped)
        future = self._pool.submit(run_job, job, running.stop, running.listener)
        future.add_done_callback(lambda _: self._forget(job.name))
        return future

    def _forget(self, name: str) -> None:
        with self._lock:
            self._running.pop(name, None)

    def stop(self, signum: int) -> None:
        with self._lock:
            self._stopped = self._stopped or signum
            for running in self._running.values():
                running.stop.ask(signum)

    def sample(self) -> dict[str, int]:
        with self._lock:
            pids = {name: r.init_pid for name, r in self._running.items() if r.init_pid}
        found = {}
        for name, pid in pids.items():
            rss = payload_rss(pid)
            if rss is not None:
                found[name] = rss
        return found

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._many is not None:
            self._many.close()


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def payload_rss(init_pid: int) -> int | None:
    """Resident bytes of the container init's descendants: the payload and what it started
    (init itself is a fork of the launcher or of its fork server; its pages are theirs)."""
    total, seen, todo = 0, False, _children(init_pid)
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
            seen = True
        except (OSError, IndexError, ValueError):
            continue
        todo += _children(pid)
    return total if seen else None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []
