"""One job, run on this host through the public API: what every executor calls where the job
runs. Output goes to the job's log files (when it has a logs directory) and its tail is kept
for the result."""

from __future__ import annotations

import errno
import os
import time

import nspawn
from nspawn import exitcodes
from nspawn.batch.jobs import FAILED, Job, JobResult, status_of
from nspawn.config.resolve import load_config
from nspawn.errors import ConfigError
from nspawn.session import Stop
from nspawn.units import cpus_to_mask

TAIL_BYTES = 16 * 1024

# What --retries may cure: a launcher failure (exit 125) whose error names a cause that passes
# with time, the errno texts of a host short of something or busy for a moment (and Windows'
# device-not-ready, which HCS answers while a volume settles). Anything else a launcher failure
# says (permissions, a missing path, what the host cannot do, an internal error) fails the same
# way each time: a retry would only wait for it again. `nspawn batch --help` says so (command.py).
_PASSING = tuple(os.strerror(n) for n in (errno.EAGAIN, errno.EBUSY, errno.ENOMEM, errno.EINTR, errno.ETIMEDOUT,
                                          errno.ENFILE, errno.EMFILE)) + ("The device is not ready",)


def retriable(exit_code: int, error: str | None, stopped: bool = False) -> bool:
    """Whether a run that ended so may end otherwise if run again (--retries)."""
    if exit_code != exitcodes.LAUNCHER or stopped or not error:
        return False
    return any(cause.lower() in error.lower() for cause in _PASSING)


class Output:
    """A binary stream the container's output is copied to: the log file (if any) and a tail."""

    def __init__(self, path: str | None):
        self.path = path
        self._file = open(path, "wb", buffering=0) if path else None
        self._tail = bytearray()

    def write(self, data: bytes) -> int:
        if self._file is not None:
            self._file.write(data)
        self._tail += data
        if len(self._tail) > 2 * TAIL_BYTES:
            del self._tail[:-TAIL_BYTES]
        return len(data)

    def flush(self) -> None:
        pass  # the log file is unbuffered

    def tail(self) -> str:
        return self._tail[-TAIL_BYTES:].decode(errors="replace")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def run_job(job: Job, stop: Stop, listener=None) -> JobResult:
    """Validate the config against this host and run it, again after a launcher failure that
    may pass (retriable) while retries are left; never raises for a failed job."""
    result = JobResult(job.name, job.config_path, status=FAILED, demand=job.demand, started=time.time())
    logs = (os.path.join(job.logs_dir, job.name + ".stdout"), os.path.join(job.logs_dir, job.name + ".stderr")) \
        if job.logs_dir else (None, None)
    result.stdout_log, result.stderr_log = logs
    try:
        config = load_config(job.config_path, host=True, data=job.config_data)
    except ConfigError as e:
        result.exit_code, result.error, result.ended = e.exit_code, e.one_line(), time.time()
        return result
    if job.timeout_seconds and not config.timeout_seconds:
        config = config.replace(timeout_seconds=job.timeout_seconds)
    if job.demand.cpu_count and job.demand.cpus:  # the CPUs the admission gave it
        config = config.replace(limits=config.limits._replace(cpu_affinity=cpus_to_mask(job.demand.cpus)))
    for attempt in range(1, job.retries + 2):
        out, err = Output(logs[0]), Output(logs[1])
        try:
            ran = nspawn.run(config, stop=stop, stdout=out, stderr=err, listener=listener)
        finally:
            out.close()
            err.close()
        result.attempts = attempt
        if not retriable(ran.exit_code, ran.error, stop.signum is not None):
            break
    result.ended = time.time()
    result.run = ran.to_dict()
    result.exit_code, result.error = ran.exit_code, ran.one_line()
    result.status = status_of(ran.exit_code, ran.interrupted_by)
    result.peak_memory_bytes = ran.peak_memory_bytes
    result.stdout_tail, result.stderr_tail = out.tail(), err.tail()
    return result
