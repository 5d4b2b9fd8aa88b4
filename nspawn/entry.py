"""The console entry point, and the body of `nspawn run` that both ways in share.

`nspawn run -c FILE` and `nspawn run -- EXECUTABLE [ARG]...`, the forms scripts, CI steps and
batch files use, are recognised here and run without importing click: click's import alone
costs more than the rest of a launch. Every other command line, and any extra option, goes
through the click CLI (nspawn.cli), whose `run` calls the same `run_and_report`.
"""

from __future__ import annotations

import json
import os
import sys

from nspawn import exitcodes


def run_and_report(config_path: str | None, overrides: dict, *, verbosity: int = 0, dry_run: bool = False,
                   as_json: bool = False) -> tuple[int, str | None]:
    """Load the config, run it (or print its plan), report; returns the launcher's exit code
    and the backend that ran the container (None when none ran)."""
    from nspawn import launch
    from nspawn.config.resolve import load_config
    from nspawn.errors import ConfigError
    from nspawn.ui import Reporter

    try:
        config = load_config(config_path, overrides, host=not dry_run)
    except ConfigError as e:
        Reporter(verbosity).problems(e.problems)
        return e.exit_code, None
    if dry_run:
        print(json.dumps(launch.plan(config).to_json(), indent=2, ensure_ascii=False))
        return exitcodes.OK, None
    reporter = Reporter(verbosity)
    result = launch.run(config, listener=reporter.event)
    for severity, line in result.outcome():
        getattr(reporter, severity)(line)
    for field, value in result.limits_applied.items():
        reporter.info(f"limit {field} = {value}")
    for phase, seconds in result.timings.items():
        reporter.debug(f"{phase}: {seconds * 1000:.1f} ms")
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False), flush=True)
    return result.exit_code, result.backend


def exit_after_run(code: int, backend: str | None) -> None:
    """End the launcher with `code`. After a Linux run everything is released and written, so
    the interpreter's teardown is skipped: it only frees what the exit frees anyway, and costs
    a run 4-5 ms, a tenth of it. A Windows container takes seconds to start, and its native
    libraries are better left the orderly exit they expect."""
    if backend == "linux":
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:  # None when the launcher was started with it closed
                    stream.flush()
            except (OSError, ValueError):
                pass  # a reader that went away cannot change the container's exit code
        os._exit(code)
    sys.exit(code)


def plain_run(argv: list[str]) -> tuple[str | None, dict] | None:
    """(config path, overrides) when argv is exactly `run -c FILE` (or --config) or
    `run -- EXECUTABLE [ARG]...`; None for anything else, which click parses."""
    if len(argv) < 3 or argv[0] != "run":
        return None
    if argv[1] == "--":
        return None, {"process_executable": argv[2], "process_arguments": argv[3:]}
    if len(argv) == 3 and argv[1] in ("-c", "--config") and os.path.isfile(argv[2]):
        return argv[2], {}
    return None


def main() -> None:
    """The console script: a launcher failure is one line and exit 125, never a traceback
    (unless -vv asks for it)."""
    try:
        plain = plain_run(sys.argv[1:])
        if plain is not None:
            exit_after_run(*run_and_report(*plain))
        from nspawn.cli import cli

        cli(prog_name="nspawn")
    except Exception as e:  # the last guard; everything expected is handled below it
        if "-vv" in sys.argv or sys.argv.count("-v") >= 2:
            raise
        print(f"nspawn: internal error: {type(e).__name__}: {e} (run with -vv for the traceback)", file=sys.stderr)
        sys.exit(exitcodes.LAUNCHER)
