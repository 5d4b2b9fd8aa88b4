"""What a batch job does on an `nspawn worker`, in a thread of the Dask worker process: take
concrete CPUs of this machine, hear the batch's stop, run the job through nspawn.run
(nspawn.batch.run_job), and return its result and its output as plain data.

A worker asked to stop (SIGTERM) stops its running jobs the same way, and hands the jobs it
has not started back to the scheduler for another worker.

A stop reaches the job through a distributed.Event named for the batch (and the signal through
a Variable beside it): the client sets it on Ctrl-C or --fail-fast, and each running job here
stops politely, then firmly after its grace, and rolls back, as it would locally.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading

from nspawn import exitcodes
from nspawn.batch.admission import Admission
from nspawn.batch.executor import Running, payload_rss
from nspawn.batch.jobs import Demand, job_from_data, not_run, result_to_data
from nspawn.batch.run_job import run_job
from nspawn.cluster.resources import cpus_needed

WATCH_SECONDS = 0.5  # how long one wait for the stop event lasts before the job is looked at again


def stop_event_name(batch_id: str) -> str:
    return f"nspawn-stop-{batch_id}"


def stop_signal_name(batch_id: str) -> str:
    return f"nspawn-stop-signal-{batch_id}"


def events_topic(batch_id: str) -> str:
    return f"nspawn-batch-{batch_id}"


class CpuIds:
    """This worker's CPUs, given to jobs so that no two running jobs share one: a job pinned by
    its config keeps its own CPUs (and holds them); the others get free ones, as many as they
    ask for (one when they ask for none). Dask's resources already bound how many CPUs the
    running jobs hold in all; a job whose own CPUs are held waits for them here."""

    def __init__(self, cpus: list[int]):
        self._admission = Admission(None, cpus)
        self._changed = threading.Condition()
        self._running: dict[tuple[str, str], Running] = {}  # by (batch, job name)
        self.stopping = False  # the worker itself was asked to stop: it starts no more jobs

    def take(self, name: tuple[str, str], demand: Demand, running: Running) -> Demand | None:
        """The demand held, with its CPUs; None when the job was stopped while it waited, or
        the worker is stopping."""
        if not demand.cpus:
            demand = demand._replace(cpu_count=cpus_needed(demand))
        with self._changed:
            while running.stop.signum is None and not self.stopping:
                held = self._admission.admit(demand)
                if held is not None:
                    self._running[name] = running
                    return held
                self._changed.wait(WATCH_SECONDS)
        return None

    def give_back(self, name: tuple[str, str], held: Demand) -> None:
        with self._changed:
            self._running.pop(name, None)
            self._admission.release(held)
            self._changed.notify_all()

    def stop_all(self, signum: int) -> None:
        """The worker itself is asked to stop: its running jobs stop and roll back first."""
        with self._changed:
            self.stopping = True
            for running in self._running.values():
                running.stop.ask(signum)
            self._changed.notify_all()

    def busy(self) -> bool:
        with self._changed:
            return bool(self._running)

    def memory(self, batch_id: str) -> dict[str, int]:
        """Resident bytes of the batch's running jobs here, where known."""
        with self._changed:
            pids = {name: r.init_pid for (batch, name), r in self._running.items() if batch == batch_id and r.init_pid}
        found = {name: payload_rss(pid) for name, pid in pids.items()}
        return {name: rss for name, rss in found.items() if rss is not None}


CPUS: CpuIds | None = None  # set by `nspawn worker` (nspawn.cluster.worker) before it takes work


def memory(batch_id: str) -> dict[str, int]:
    """Run on every worker by the batch's client (Client.run): its running jobs' memory."""
    return CPUS.memory(batch_id) if CPUS is not None else {}


def _watch(event, signal_variable, stop, done: threading.Event) -> None:
    while not done.is_set():
        try:
            if event.wait(WATCH_SECONDS):
                stop.ask(int(signal_variable.get(timeout=5)))
                return
        except Exception:  # the scheduler is away for a moment; the job goes on, the next wait retries
            done.wait(WATCH_SECONDS)


def run(job_data: dict, batch_id: str) -> dict:
    """Run one job here; returns {"result": plain result, "stdout": bytes, "stderr": bytes}."""
    from distributed import Event, Reschedule, Variable, get_client, get_worker

    worker = get_worker()
    job = job_from_data(job_data)
    host = socket.gethostname()
    if CPUS is None:
        result = not_run(job, f"worker {worker.address} is a plain Dask worker; jobs run on `nspawn worker`s",
                         exit_code=exitcodes.LAUNCHER)
        return _answer(result, host, worker.address, None)
    running, done = Running(), threading.Event()
    client = get_client()  # the worker's client: found from the task's thread only, so made here for the watcher
    watched = Event(stop_event_name(batch_id), client=client), Variable(stop_signal_name(batch_id), client=client)
    watcher = threading.Thread(target=_watch, args=(*watched, running.stop, done), name=f"nspawn-stop-{job.name}", daemon=True)
    watcher.start()
    logs = tempfile.mkdtemp(prefix="nspawn-job-")
    key = (batch_id, job.name)
    try:
        held = CPUS.take(key, job.demand, running)
        if held is None and CPUS.stopping and running.stop.signum is None:
            raise Reschedule()  # this worker is leaving: the scheduler sends the job to another
        if held is None:
            result = not_run(job, "not run: the batch was stopped")
        else:
            # A run begins: the client counts the runs that never answered (lost with their worker).
            worker.log_event(events_topic(batch_id), {"job": job.name, "worker": worker.address, "host": host})
            try:
                result = run_job(job._replace(demand=held, logs_dir=logs), running.stop, running.listener)
            finally:
                CPUS.give_back(key, held)
            if result.error and result.run is None:  # refused here: say where, its paths are this host's
                result.error = f"on {host}: {result.error}"
        return _answer(result, host, worker.address, logs)
    finally:
        done.set()
        shutil.rmtree(logs, ignore_errors=True)


def _answer(result, host: str, address: str, logs: str | None) -> dict:
    result.host, result.worker = host, address
    output = {}
    for stream in ("stdout", "stderr"):
        path = getattr(result, f"{stream}_log")
        output[stream] = _read(path) if logs and path else None
        setattr(result, f"{stream}_log", None)  # this host's temporary file: the client says where it keeps it
    return {"result": result_to_data(result), **output}


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None
