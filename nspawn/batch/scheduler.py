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
    """What the batch as a whole did: counters, not the jobs' results (each goes to the
    listeners as it ends, and is kept by none that need not keep it)."""

    def __init__(self, total: int, interrupted_by: int | None = None):
        self.total = total  # jobs in the batch
        self.counts = {PASSED: 0, FAILED: 0, INTERRUPTED: 0, NOT_RUN: 0}
        self.interrupted_by = interrupted_by  # the signal that stopped the batch
        self.fail_fast_stop = False

    def count(self, result: JobResult) -> None:
        self.counts[result.status] += 1

    @property
    def exit_code(self) -> int:
        if self.interrupted_by:
            return exitcodes.from_signal(self.interrupted_by)
        return 0 if self.counts[PASSED] == self.total else 1


class Listener:
    """What the display and the reports hear; every method is called on the main thread."""

    def started(self, job: Job) -> None: ...

    def finished(self, index: int, result: JobResult) -> None:
        """`result` is the job at `index` in the batch's order; each job ends once."""

    def tick(self, memory: dict[str, int]) -> None: ...


def run_batch(jobs: list[Job], refused: dict[str, JobResult], executor: Executor, admission: Admission,
              slots: int, listeners: list[Listener], *, fail_fast: bool = False) -> Outcome:
    """Run `jobs` at most `slots` at once as admission allows; `refused` holds results for jobs
    that fail before running (a bad config). Each job's result goes to the listeners as it ends
    (with the job's index), and is then dropped: a batch of any size holds only its running jobs."""
    outcome = Outcome(len(jobs))

    def finished(index: int, result: JobResult) -> None:
        outcome.count(result)
        for listener in listeners:
            listener.finished(index, result)

    pending: list[int] = []  # the indexes of the jobs not started yet
    for index, job in enumerate(jobs):
        why = admission.never_fits(job.demand)
        if job.name in refused or why:
            finished(index, refused.get(job.name) or not_run(job, why, exit_code=exitcodes.USAGE))
        else:
            pending.append(index)
    running: dict[Future, tuple[int, Job]] = {}
    peaks: dict[str, int] = {}  # of the running jobs

    def admit() -> list[Job]:
        """Submit the pending jobs that fit now, in order, while slots are free; returns them."""
        started, taken = [], []
        for position, index in enumerate(pending):
            if len(running) >= slots:
                break
            held = admission.admit(jobs[index].demand)
            if held is not None:
                taken.append(position)
                job = jobs[index]._replace(demand=held)
                running[executor.submit(job)] = (index, job)
                started.append(job)
        for position in reversed(taken):
            del pending[position]
        return started

    stopping = outcome.fail_fast_stop = fail_fast and outcome.counts[FAILED] > 0
    caught = Stop()
    caught.deferred = True  # the handler only notes the signal (see above)
    started: list[Job] = []
    with signals_to(caught):
        while running or (pending and not stopping):
            if caught.signum and outcome.interrupted_by is None:
                outcome.interrupted_by = caught.signum
                stopping = True
                executor.stop(caught.signum)
            if not stopping and len(running) < slots:
                started += admit()
            for job in started:
                for listener in listeners:
                    listener.started(job)
            started = []
            done, _ = wait(running, timeout=TICK, return_when=FIRST_COMPLETED)
            ended = []
            for future in done:
                index, job = running.pop(future)
                admission.release(job.demand)
                result = future.result()
                if caught.signum and result.status == FAILED and result.run is not None:
                    _interrupted(result, caught.signum)
                peak = peaks.pop(job.name, None)
                if result.peak_memory_bytes is None:
                    result.peak_memory_bytes = peak
                ended.append((index, result))
                if fail_fast and result.status == FAILED and not stopping:
                    stopping = outcome.fail_fast_stop = True
                    executor.stop(signal.SIGTERM)
            if ended and not stopping and not caught.signum:
                # The freed slots are filled before the ended jobs are told: the next jobs start
                # while the listeners work (the reports encode each piece), not after them.
                started = admit()
            for index, result in ended:
                finished(index, result)
            memory = executor.sample()
            if memory:  # a job that has just ended may still be sampled: only the running ones are kept
                names = {job.name for _, job in running.values()}
                for name, rss in memory.items():
                    if name in names:
                        peaks[name] = max(rss, peaks.get(name, 0))
            for listener in listeners:
                listener.tick(memory)
    for index in pending:  # never started: the batch was stopped
        finished(index, not_run(jobs[index], "not run: the batch was stopped"))
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
