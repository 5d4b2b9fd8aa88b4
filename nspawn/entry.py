"""The console entry point.

`nspawn run -c FILE` and `nspawn run -- EXECUTABLE [ARG]...`, the forms scripts, CI steps and
batch files use, are recognised here and run without importing click: click's import alone
costs more than the rest of a launch. Every other command line, and any extra option, goes
through the click CLI (nspawn.cli), whose `run` ends through the same nspawn.runcmd.
"""

from __future__ import annotations

import os
import sys

from nspawn import exitcodes


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
            from nspawn.runcmd import exit_after_run, run_and_report

            exit_after_run(*run_and_report(*plain))
        from nspawn.cli import cli

        cli(prog_name="nspawn")
    except Exception as e:  # the last guard; everything expected is handled below it
        if "-vv" in sys.argv or sys.argv.count("-v") >= 2:
            raise
        print(f"nspawn: internal error: {type(e).__name__}: {e} (run with -vv for the traceback)", file=sys.stderr)
        sys.exit(exitcodes.LAUNCHER)
