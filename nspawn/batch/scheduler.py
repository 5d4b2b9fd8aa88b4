"""The batch's loop on the main thread: admit and submit jobs, collect results, and turn
SIGINT/SIGTERM (or --fail-fast) into a stop of every running job.

The signal handler only notes the signal: stopping the jobs takes the executor's lock, which
the main thread may hold at the moment the handler runs on it.
"""

from __future__ import annotations

import signal
from concurrent.futures import FIRST_COMPLETED, Future, wait

from nspawn import exitcodes
from nspawn.batch.admission import Admission
from nspawn.batch.executor import Executor
from nspawn.batch.jobs import FAILED, INTERRUPTED, NOT_RUN, PASSED, Job, JobResult, not_run
from nspawn.session import Stop, signals_to

TICK = 0.1  # how often the loop looks at signals and samples memory


class Outcome:
    def __init__(self, results: list[JobResult], interrupted_by: int | None = None):
        self.results = results
        self.interrupted_by = interrupted_by  # the signal that stopped the batch
        self.fail_fast_stop = False

    @property
    def exit_code(self) -> int:
        if self.interrupted_by:
            return exitcodes.from_signal(self.interrupted_by)
        return 0 if all(r.status == PASSED for r in self.results) else 1


class Listener:
    """What the display hears; every method is called on the main thread."""

    def started(self, job: Job) -> None: ...

    def finished(self, result: JobResult) -> None: ...

    def tick(self, memory: dict[str, int]) -> None: ...


def run_batch(jobs: list[Job], refused: dict[str, JobResult], executor: Executor, admission: Admission,
              slots: int, listener: Listener, *, fail_fast: bool = False) -> Outcome:
    """Run `jobs` at most `slots` at once as admission allows; `refused` holds results for jobs
    that fail before running (a bad config). Returns a result per job, in the jobs' order."""
    results: dict[str, JobResult] = {}
    pending: list[Job] = []
    for job in jobs:
        why = admission.never_fits(job.demand)
        if job.name in refused or why:
            results[job.name] = refused.get(job.name) or not_run(job, why, exit_code=exitcodes.USAGE)
            listener.finished(results[job.name])
        else:
            pending.append(job)
    outcome = Outcome([])
    running: dict[Future, Job] = {}
    peaks: dict[str, int] = {}
    stopping = outcome.fail_fast_stop = fail_fast and any(r.status == FAILED for r in results.values())
    caught = Stop()
    caught.deferred = True  # the handler only notes the signal (see above)
    with signals_to(caught):
        while pending or running:
            if caught.signum and outcome.interrupted_by is None:
                outcome.interrupted_by = caught.signum
                stopping = True
                executor.stop(caught.signum)
            if not stopping:
                for job in list(pending):
                    if len(running) >= slots:
                        break
                    held = admission.admit(job.demand)
                    if held is not None:
                        pending.remove(job)
                        job = job._replace(demand=held)
                        running[executor.submit(job)] = job
                        listener.started(job)
            else:
                pending.clear()
            done, _ = wait(list(running), timeout=TICK, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                admission.release(job.demand)
                result = future.result()
                if caught.signum and result.status == FAILED and result.run is not None:
                    _interrupted(result, caught.signum)
                if result.peak_memory_bytes is None:
                    result.peak_memory_bytes = peaks.get(job.name)
                results[job.name] = result
                listener.finished(result)
                if fail_fast and result.status == FAILED and not stopping:
                    stopping = outcome.fail_fast_stop = True
                    executor.stop(signal.SIGTERM)
            memory = executor.sample()
            for name, rss in memory.items():
                peaks[name] = max(rss, peaks.get(name, 0))
            listener.tick(memory)
    for job in jobs:
        if job.name not in results:
            results[job.name] = not_run(job, "not run: the batch was stopped")
            listener.finished(results[job.name])
    outcome.results = [results[job.name] for job in jobs]
    return outcome


def _interrupted(result: JobResult, signum: int) -> None:
    """A job that ran and failed after the batch was signalled was stopped, whatever its code
    says: Ctrl-C typed on a terminal reaches the containers' processes too (they are in the
    terminal's foreground process group), so a payload may die of SIGINT (130), or trap it and
    exit with its own code, before the batch asks its run to stop, and the run then never hears
    of a stop. Its verdict is unknown, as for any job the stop ended."""
    result.status = INTERRUPTED
    result.run.setdefault("interrupted_by", None)
    result.run["interrupted_by"] = result.run["interrupted_by"] or signum


def counts(results: list[JobResult]) -> dict[str, int]:
    found = {PASSED: 0, FAILED: 0, INTERRUPTED: 0, NOT_RUN: 0}
    for r in results:
        found[r.status] += 1
    return found
