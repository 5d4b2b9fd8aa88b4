"""`nspawn worker`'s process: clean what an earlier worker with this state directory left
(a worker killed mid-job leaves its containers' journals), then serve the scheduler as a Dask
worker offering this machine's memory and CPUs, until a signal or the scheduler ends it.

No nanny process: a worker that dies stays dead until whoever started it starts it again (a
service manager), and that restart cleans its leftovers before it takes work. The backend's
help for many runs (backends.many_runs: the Linux fork server) is started on the main thread,
which outlives every job: the containers' first processes die with it.
"""

from __future__ import annotations

import asyncio
import signal

from nspawn.cluster import task
from nspawn.cluster.resources import offer
from nspawn.session import STOP_SIGNALS


def clean(say) -> bool:
    """`nspawn cleanup` of this worker's state directory; whether every step succeeded."""
    from nspawn.maintenance import cleanup

    ok = True
    for step in cleanup():
        say(step.line, step.ok)
        ok &= step.ok
    return ok


def serve(address: str, security, memory_bytes: int, cpus: list[int], name: str | None, say) -> int:
    """Run the worker until it is stopped; the exit code."""
    from nspawn import backends

    task.CPUS = task.CpuIds(cpus)
    many = backends.many_runs()
    try:
        return asyncio.run(_serve(address, security, memory_bytes, cpus, name, say))
    finally:
        if many is not None:
            many.close()


async def _serve(address, security, memory_bytes, cpus, name, say) -> int:
    from distributed import Worker

    stopped: list[int] = []
    asked = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        stopped.append(signum)
        task.CPUS.stop_all(signal.SIGTERM if signum != signal.SIGINT else signum)
        asked.set()

    for signum in STOP_SIGNALS:
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except NotImplementedError:  # Windows' event loop: a plain handler hands it to the loop
            signal.signal(signum, lambda s, frame: loop.call_soon_threadsafe(on_signal, s))
    # memory_limit=0: Dask's own memory management (spill, pause) is for its data, not for
    # the containers, whose memory their cgroups bound. Its plain-HTTP status server answers
    # on loopback only: the network reaches a worker over TLS alone.
    worker = Worker(address, nthreads=len(cpus), resources=offer(memory_bytes, len(cpus)), security=security,
                    memory_limit=0, name=name, dashboard_address="127.0.0.1:0")
    await worker
    say(f"worker {worker.address} serves {address}: {len(cpus)} CPUs ({','.join(map(str, cpus))}), "
        f"{memory_bytes // 2**20} MiB", True)
    ended = asyncio.ensure_future(worker.finished())
    waiting = asyncio.ensure_future(asked.wait())
    await asyncio.wait([ended, waiting], return_when=asyncio.FIRST_COMPLETED)
    while task.CPUS.busy():  # the stopped jobs roll back before the worker leaves
        await asyncio.sleep(0.1)
    waiting.cancel()
    if not ended.done():
        await worker.close(reason="nspawn worker stopped")
    return 128 + stopped[0] if stopped else 0
