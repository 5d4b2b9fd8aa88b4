"""`nspawn worker SCHEDULER`: serve batches sent through a Dask scheduler (docs/cluster.md)."""

from __future__ import annotations

import os
import sys

import click

from nspawn import exitcodes
from nspawn.cli import reporter, verbosity_options
from nspawn.cli.params import Size
from nspawn.cluster import security
from nspawn.units import MIB


@click.command()
@click.argument("scheduler")
@click.option("--memory", "memory_mib", type=Size(MIB), help="Memory the jobs here may reserve in all (MiB or 512M, 4G; default: MemAvailable).")
@click.option("--cpus", type=click.IntRange(1), help="How many of the CPUs this worker may use it gives jobs (default: all).")
@click.option("--name", help="The worker's name at the scheduler (default: its address).")
@security.options
@verbosity_options
@click.pass_context
def worker(ctx, scheduler, memory_mib, cpus, name, tls_ca, tls_cert, tls_key, security_file):
    """Run batch jobs sent through the Dask scheduler at SCHEDULER (tls://HOST:PORT, or
    tcp://127.0.0.1:PORT on loopback), as root. Before taking work it runs `nspawn cleanup`
    of its state directory (NSPAWN_STATE_DIR): what a worker killed there left is released.
    Needs the cluster extra: pip install 'nspawn[cluster]'.
    """
    from nspawn.hostfacts import allowed_cpus, memory_available

    shown = reporter(ctx)
    tls, problems = security.resolve(scheduler, tls_ca, tls_cert, tls_key, security_file)
    if sys.platform.startswith("linux") and os.geteuid() != 0:
        problems.append("nspawn worker runs containers, which needs root")
    offered = allowed_cpus()
    if cpus and cpus > len(offered):
        problems.append(f"--cpus {cpus}: this worker may use {len(offered)} CPUs")
    memory = memory_mib * MIB if memory_mib else memory_available()
    if memory is None:
        problems.append("--memory is needed: this host does not say how much memory it has available")
    if problems:
        shown.problems(problems)
        ctx.exit(exitcodes.USAGE)
    from nspawn.cluster.worker import clean, serve

    def say(line: str, ok: bool) -> None:
        click.echo(line, err=True) if ok else shown.error(line)

    if not clean(say):
        shown.error("the state directory's leftovers are not all released; the worker takes no work")
        ctx.exit(exitcodes.LAUNCHER)
    ctx.exit(serve(scheduler, tls.security() if tls else None, memory, offered[:cpus] if cpus else offered, name, say))
