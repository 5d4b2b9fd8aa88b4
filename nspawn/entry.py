"""The console entry point.

`nspawn run -c FILE` and `nspawn run -- EXECUTABLE [ARG]...` (with -q or -v before or after
`run`), the forms scripts, CI steps and batch files use, are recognised here and run without importing click: click's import alone
costs more than the rest of a launch. Every other command line, and any extra option, goes
through the click CLI (nspawn.cli), whose `run` ends through the same nspawn.runcmd.
"""

from __future__ import annotations

import os
import sys

from nspawn import exitcodes


# The verbosity flags the plain forms take, before or after `run`, as click would count them.
_VERBOSITY = {"-q": -1, "--quiet": -1, "-qq": -2, "-v": 1, "--verbose": 1, "-vv": 2}


def plain_run(argv: list[str]) -> tuple[str | None, dict, int] | None:
    """(config path, overrides, verbosity) when argv is exactly `run -c FILE` (or --config) or
    `run -- EXECUTABLE [ARG]...`, with -q/-v flags before or after `run` if any; None for
    anything else, which click parses."""
    verbosity, at = 0, 0
    while at < len(argv) and argv[at] in _VERBOSITY:
        verbosity, at = verbosity + _VERBOSITY[argv[at]], at + 1
    if at >= len(argv) or argv[at] != "run":
        return None
    at += 1
    while at < len(argv) and argv[at] in _VERBOSITY:
        verbosity, at = verbosity + _VERBOSITY[argv[at]], at + 1
    rest = argv[at:]
    if len(rest) >= 2 and rest[0] == "--":
        return None, {"process_executable": rest[1], "process_arguments": rest[2:]}, verbosity
    if len(rest) == 2 and rest[0] in ("-c", "--config") and os.path.isfile(rest[1]):
        return rest[1], {}, verbosity
    return None


def main() -> None:
    """The console script: a launcher failure is one line and exit 125, never a traceback
    (unless -vv asks for it)."""
    try:
        plain = plain_run(sys.argv[1:])
        if plain is not None:
            from nspawn.runcmd import exit_after_run, run_and_report

            path, overrides, verbosity = plain
            exit_after_run(*run_and_report(path, overrides, verbosity=verbosity))
        from nspawn.cli import cli

        cli(prog_name="nspawn")
    except Exception as e:  # the last guard; everything expected is handled below it
        if "-vv" in sys.argv or sys.argv.count("-v") >= 2:
            raise
        print(f"nspawn: internal error: {type(e).__name__}: {e} (run with -vv for the traceback)", file=sys.stderr)
        sys.exit(exitcodes.LAUNCHER)
