"""`nspawn batch PATH…`: many configs as jobs in one launcher process, with reports CI reads."""

from __future__ import annotations

import os
import time

import click

from nspawn import exitcodes
from nspawn.cli import verbosity, verbosity_options
from nspawn.cli.params import Duration, Size
from nspawn.cluster import security
from nspawn.hostfacts import allowed_cpus, memory_available
from nspawn.units import MIB, mib_to_bytes

# What nspawn.batch.run_job.retriable decides, said where --help shows it (not imported from
# there: listing the commands must not import the run).
RETRIES_HELP = ("Run a job again, at most N times, after a launcher failure (exit 125) that may pass: a busy or "
                "temporarily unavailable resource, memory or descriptors short, a host call timed out. Never after "
                "a config or host-check error (2, 126, 127), the payload's own exit code, a stop, or a launcher "
                "failure that would repeat (permissions, missing paths, what the host cannot do).")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True)
@click.option("-j", "--jobs", "slots", type=click.IntRange(1), default=lambda: len(allowed_cpus()), show_default="the CPUs this launcher may use",
              help="Most jobs running at once.")
@click.option("--logs", "logs_dir", type=click.Path(file_okay=False), help="Keep each job's stdout and stderr in DIR/<job>.stdout and .stderr.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write one JSON record per job to this file.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), help="Write JUnit XML (a job is a test case) to this file.")
@click.option("--fail-fast", is_flag=True, help="After the first failed job, stop the running ones and start no more.")
@click.option("--timeout", "timeout_seconds", type=Duration(), default=0, help="Per-job timeout for configs that set none (30, 90s, 5m).")
@click.option("--retries", type=click.IntRange(0), default=0, help=RETRIES_HELP)
@click.option("--memory-budget", type=Size(MIB), help="Memory the running jobs' limits may add up to (MiB or 512M, 4G; default: MemAvailable).")
@click.option("--cluster", "scheduler", metavar="SCHEDULER",
              help="Run the jobs on the `nspawn worker`s of the Dask scheduler at SCHEDULER (tls://HOST:PORT, or "
                   "tcp://127.0.0.1:PORT on loopback); needs pip install 'nspawn[cluster]'.")
@security.options
@verbosity_options
@click.pass_context
def batch(ctx, paths, slots, logs_dir, report_path, junit_path, fail_fast, timeout_seconds, retries, memory_budget,
          scheduler, tls_ca, tls_cert, tls_key, security_file):
    """Run every config in PATHS (files, directories of *.json, globs) as a job, at most -j at once.

    With --cluster, the jobs run on the cluster's workers (each job where its memory and CPUs
    fit; the workers read the configs from this machine, their host paths on their own).

    Exit 0 when every job succeeded, 1 otherwise, 2 on usage errors, 128+N when stopped by
    signal N (the report and JUnit file are still written, with the jobs that did not run).
    """
    from nspawn.batch import admission, display, sources
    from nspawn.batch import scheduler as scheduler_loop
    from nspawn.batch.executor import LocalExecutor
    from nspawn.batch.jobs import Job, not_run
    from nspawn.config.resolve import load_config
    from nspawn.errors import ConfigError
    from nspawn.ui import Reporter

    reporter = Reporter(verbosity(ctx))
    tls = None
    if scheduler or tls_ca or tls_cert or tls_key or security_file:
        tls = _cluster_options(ctx, reporter, scheduler, tls_ca, tls_cert, tls_key, security_file, memory_budget)
    files, problems = sources.expand(list(paths))
    if problems:
        reporter.problems(problems)
        ctx.exit(exitcodes.USAGE)
    _check_outputs(ctx, reporter, logs_dir, report_path, junit_path)
    started = time.time()
    jobs, refused = [], {}
    for path, name in zip(files, sources.job_names(files)):
        job = Job(name, os.path.abspath(path), timeout_seconds=timeout_seconds, retries=retries,
                  logs_dir=os.path.abspath(logs_dir) if logs_dir else None)
        try:  # the file checks here, for admission; the host checks where the job runs
            if scheduler:  # the config travels with the job: the worker may not see this file
                with open(path, "rb") as f:
                    job = job._replace(config_data=f.read())
            job = job._replace(demand=admission.demand_of(load_config(path, data=job.config_data)))
        except ConfigError as e:
            refused[name] = not_run(job, e.one_line(), exit_code=e.exit_code)
        except OSError as e:
            refused[name] = not_run(job, f"{path}: cannot read the config file: {e.strerror}", exit_code=exitcodes.USAGE)
        jobs.append(job)
    # The reports' spools (unnamed files) before the executor, whose fork server or cluster
    # connection the try below ends: a spool that cannot be made exits before either exists.
    reports = _reports(ctx, reporter, report_path, junit_path, len(jobs))
    if scheduler:
        executor, admitted, slots = _cluster(ctx, reporter, scheduler, tls, logs_dir, slots)
    else:
        budget = mib_to_bytes(memory_budget) if memory_budget else memory_available()
        budget_from = "--memory-budget gives the batch" if memory_budget else "this host has available for the batch"
        executor, admitted = LocalExecutor(slots), admission.Admission(budget, budget_from=budget_from)
    shown = display.make(len(jobs), reporter)
    try:
        outcome = scheduler_loop.run_batch(jobs, refused, executor, admitted, slots, [shown, *reports],
                                           fail_fast=fail_fast)
    except BaseException:
        for spooled in reports:
            spooled.close()
        raise
    finally:
        executor.close()
    shown.close(outcome, time.time() - started)
    for spooled in reports:
        try:
            spooled.write(outcome, started)
        except OSError as e:
            reporter.error(f"{spooled.path}: cannot write it: {e.strerror}")
            ctx.exit(exitcodes.LAUNCHER)
    ctx.exit(outcome.exit_code)


def _reports(ctx, reporter, report_path, junit_path, total) -> list:
    """The report and JUnit file asked for, each spooling its jobs' pieces as they end
    (exit 125 when the spool cannot be made beside the file)."""
    kinds = []
    if report_path:
        from nspawn.batch.report import Report

        kinds.append((report_path, Report))
    if junit_path:  # imported only when asked: xml.etree adds 0.4 MiB to the launcher, whose pages each job's fork copies
        from nspawn.batch.junit import JUnit

        kinds.append((junit_path, JUnit))
    reports = []
    for path, kind in kinds:
        try:
            reports.append(kind(path, total))
        except OSError as e:
            for made in reports:
                made.close()
            reporter.error(f"{path}: cannot write it: {e.strerror}")
            ctx.exit(exitcodes.LAUNCHER)
    return reports


def _cluster_options(ctx, reporter, scheduler, tls_ca, tls_cert, tls_key, security_file, memory_budget):
    """The cluster's certificates, once the options are found usable (exit 2 otherwise)."""
    problems = []
    if not scheduler:
        problems.append("--tls-ca, --tls-cert, --tls-key and --security are for --cluster")
    else:
        tls, problems = security.resolve(scheduler, tls_ca, tls_cert, tls_key, security_file)
    if scheduler and memory_budget:
        problems.append("--memory-budget is for a local batch; on a cluster each worker's --memory is its budget")
    if problems:
        reporter.problems(problems)
        ctx.exit(exitcodes.USAGE)
    return tls


def _cluster(ctx, reporter, address, tls, logs_dir, slots):
    """The cluster's executor, its admission and the most jobs submitted at once: the CPUs its
    workers offer (every job holds one at least), or -j when given and fewer."""
    from nspawn.cluster.executor import ClusterExecutor, connect, offers
    from nspawn.cluster.resources import ClusterAdmission

    try:
        client = connect(address, tls.security() if tls else None)
    except (OSError, TimeoutError) as e:
        reporter.error(f"--cluster {address}: cannot reach the scheduler or no worker joined it: {e}")
        ctx.exit(exitcodes.LAUNCHER)
    admitted = ClusterAdmission(offers(client))
    given = ctx.get_parameter_source("slots") == click.core.ParameterSource.COMMANDLINE
    slots = min(slots, admitted.cpus) if given else admitted.cpus
    reporter.info(f"{len(admitted.offers)} workers at {address}, {admitted.cpus} CPUs in all")
    return ClusterExecutor(client, os.path.abspath(logs_dir) if logs_dir else None), admitted, max(slots, 1)


def _check_outputs(ctx, reporter, logs_dir, report_path, junit_path) -> None:
    """Before the first job: the report and JUnit file can be written where asked, and the logs
    directory exists or is made (itself only, said at -v: never its parents). Exit 2 otherwise."""
    from nspawn.batch.report import check_writable

    problems = []
    for option, path in (("--report", report_path), ("--junit", junit_path)):
        why = check_writable(path) if path else None
        if why:
            problems.append(f"{option} {path}: cannot write the file there: {why}")
    if logs_dir:
        parent = os.path.dirname(os.path.abspath(logs_dir))
        if not os.path.isdir(logs_dir):
            if not os.path.isdir(parent):
                problems.append(f"--logs {logs_dir}: its parent directory {parent} does not exist")
            else:
                try:
                    os.mkdir(logs_dir)
                    reporter.info(f"made the logs directory {os.path.abspath(logs_dir)}")
                except OSError as e:
                    problems.append(f"--logs {logs_dir}: cannot make it: {e.strerror or e}")
        if not problems and os.path.isdir(logs_dir):
            why = check_writable(os.path.join(logs_dir, "job.stdout"))
            if why:
                problems.append(f"--logs {logs_dir}: cannot write the logs there: {why}")
    if problems:
        reporter.problems(problems)
        ctx.exit(exitcodes.USAGE)
