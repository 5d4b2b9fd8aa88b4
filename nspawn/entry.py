"""The console entry point.

`nspawn run -c FILE` and `nspawn run -- EXECUTABLE [ARG]...` (with -q or -v before or after
`run`), the forms scripts, CI steps and batch files use, are recognised here and run without importing click: click's import alone
costs more than the rest of a launch. Every other command line, and any extra option, goes
through the click CLI (nspawn.cli), whose `run` ends through the same nspawn.runcmd.
"""

from __future__ import annotations

import os
import sys

from nspawn import __version__, exitcodes

# `nspawn run --help` as click renders it at its widest (click narrows help to the terminal
# only below 80 columns): generated from the CLI by `python -m nspawn.cli.runhelp`, and checked
# against it by tests/test_cli.py, so that the help a user asks for most costs no click import.
RUN_HELP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cli", "run_help.txt")


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


def _columns() -> int:
    """The width click formats help for: shutil.get_terminal_size's rule (COLUMNS, else the
    terminal on stdout, else 80), without importing shutil."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


def fixed_answer(argv: list[str]) -> str | None:
    """What `--version` and `run --help` print, when it is known without click; else None."""
    if argv in (["--version"], ["-V"]):
        return f"nspawn, version {__version__}\n"  # click.version_option's wording
    if argv in (["run", "--help"], ["run", "-h"]) and _columns() >= 80:
        try:
            with open(RUN_HELP, encoding="utf-8") as f:
                return f.read()
        except OSError:
            return None  # click renders it
    return None


def main() -> None:
    """The console script: a launcher failure is one line and exit 125, never a traceback
    (unless -vv asks for it)."""
    try:
        answer = fixed_answer(sys.argv[1:])
        if answer is not None:
            sys.stdout.write(answer)
            sys.stdout.flush()
            sys.exit(exitcodes.OK)
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
