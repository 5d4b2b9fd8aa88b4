"""The batch's executor for a cluster (nspawn/batch/executor.py's interface): each job is a Dask
task with its memory and CPUs as resources, run by nspawn.cluster.task on an `nspawn worker`.

A worker lost mid-job (killed, its machine gone) has its job run again on another worker by
the scheduler, at most distributed.scheduler.allowed-failures times (3 unless the scheduler's
configuration says otherwise); each run logs an event at its start, and the runs that did not
end are counted in the job's result (lost_runs). The running jobs' memory is sampled on the
workers every SAMPLE_SECONDS, for the live display and the peak of jobs without a memory limit.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from concurrent.futures import Future

from nspawn import exitcodes
from nspawn.batch.jobs import Job, JobResult, job_to_data, not_run, result_from_data
from nspawn.cluster import INSTALL, task
from nspawn.cluster.resources import needs

SAMPLE_SECONDS = 1.0  # how often the running jobs' memory is asked of the workers


class ClusterExecutor:
    def __init__(self, client, logs_dir: str | None):
        from distributed import Event, Variable

        self._client = client
        self._logs_dir = logs_dir
        self.batch_id = uuid.uuid4().hex  # names this batch's stop event and start events, unique on the scheduler
        self._stop_event = Event(task.stop_event_name(self.batch_id), client=client)
        self._stop_signal = Variable(task.stop_signal_name(self.batch_id), client=client)
        self._lock = threading.Lock()
        self._futures: set = set()  # the submitted jobs' not yet ended: a batch of any size holds only its running jobs
        self._stopped = False
        self._memory: dict[str, int] = {}
        self._runs: dict[str, int] = {}  # runs begun per job, as the workers' events say
        client.subscribe_topic(task.events_topic(self.batch_id), self._run_began)
        self._closing = threading.Event()
        self._sampler = threading.Thread(target=self._sample_workers, name="nspawn-cluster-memory", daemon=True)
        self._sampler.start()

    def submit(self, job: Job) -> "Future[JobResult]":
        answer: Future = Future()
        answer.set_running_or_notify_cancel()
        data = job_to_data(job._replace(logs_dir=None))
        future = self._client.submit(task.run, data, self.batch_id, key=f"nspawn-{self.batch_id}-{job.name}",
                                     resources=needs(job.demand), pure=False)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(lambda done: self._finished(job, done, answer))
        return answer

    def _finished(self, job: Job, future, answer: Future) -> None:
        try:
            result = self._result(job, future)
        except Exception as e:  # the future never fails for a failed job
            result = not_run(job, f"the cluster lost the job: {type(e).__name__}: {e}", exit_code=exitcodes.LAUNCHER)
        with self._lock:  # its result is the cluster's to free once no future names it
            self._futures.discard(future)
        answer.set_result(result)

    def _result(self, job: Job, future) -> JobResult:
        starts = self._starts(job.name)
        if future.status == "cancelled":  # the batch cancels none: the scheduler dropped it
            return not_run(job, "the scheduler dropped the job (restarted, or the connection to it was lost)",
                           exit_code=exitcodes.LAUNCHER)
        if future.status == "error":
            from distributed import KilledWorker

            error = future.exception()
            if isinstance(error, KilledWorker):
                why = (f"its worker was lost {starts} time{'s' * (starts != 1)} while it ran; not run again "
                       "(the scheduler's distributed.scheduler.allowed-failures)")
            else:
                why = f"the cluster could not run it: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                if "deserializ" in why:  # the scheduler unpickles the task, which names nspawn's code
                    why += f" (the scheduler and the workers need nspawn too: {INSTALL} where they run)"
            result = not_run(job, why, exit_code=exitcodes.LAUNCHER)
            result.lost_runs = starts
            return result
        answer = future.result()
        result = result_from_data(answer["result"])
        result.lost_runs = max(starts - 1, 0)
        if self._logs_dir:
            for stream in ("stdout", "stderr"):
                if answer[stream] is not None:
                    path = os.path.join(self._logs_dir, f"{job.name}.{stream}")
                    with open(path, "wb") as f:
                        f.write(answer[stream])
                    setattr(result, f"{stream}_log", path)
        return result

    def _run_began(self, event) -> None:
        """A worker began a run of a job (the scheduler passes its event on before the job's
        result, which comes the same way); a run that never answered was lost with its worker."""
        _, message = event
        if isinstance(message, dict) and isinstance(message.get("job"), str):
            with self._lock:
                self._runs[message["job"]] = self._runs.get(message["job"], 0) + 1

    def _starts(self, name: str) -> int:
        """The runs begun of a job that has ended (forgotten with it)."""
        with self._lock:
            return self._runs.pop(name, 0)

    def stop(self, signum: int) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self._stop_signal.set(int(signum))
            self._stop_event.set()
        except Exception:  # never raises: the jobs then end on their own
            pass

    def sample(self) -> dict[str, int]:
        with self._lock:
            return dict(self._memory)

    def _sample_workers(self) -> None:
        """Every SAMPLE_SECONDS, the running jobs' memory from every worker, off the batch's
        loop (a round trip to each worker is too slow for its tick)."""
        while not self._closing.wait(SAMPLE_SECONDS):
            try:
                answers = self._client.run(task.memory, self.batch_id, on_error="return")
            except Exception:  # the scheduler is away for a moment: the display keeps the last figures
                continue
            found = {}
            for answer in answers.values():
                if isinstance(answer, dict):
                    found.update(answer)
            with self._lock:
                self._memory = found

    def close(self) -> None:
        """Waits for the jobs (stopping them first if the batch ended early: an error of its
        own), then clears this batch's stop event and signal off the scheduler."""
        self._closing.set()
        with self._lock:
            futures = list(self._futures)
        self._sampler.join()
        try:
            if not all(f.done() for f in futures):
                self.stop(signal.SIGTERM)
            for future in futures:
                try:
                    future.result()
                except Exception:  # said in the job's result already
                    pass
            self._client.unsubscribe_topic(task.events_topic(self.batch_id))
            self._stop_event.clear()
            self._stop_signal.delete()
        finally:
            self._client.close()


def connect(address: str, security):
    """A client of the scheduler at `address`, once at least one worker is there; each wait
    as long as Dask's distributed.comm.timeouts.connect (30 s unless configured)."""
    import dask
    from dask.utils import parse_timedelta
    from distributed import Client

    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="s")
    client = Client(address, security=security, timeout=timeout, set_as_default=False)
    client.wait_for_workers(1, timeout=timeout)
    return client


def offers(client) -> dict[str, dict]:
    """Each worker's address and the resources it offers."""
    return {address: dict(info.get("resources") or {}) for address, info in client.scheduler_info(n_workers=-1)["workers"].items()}

