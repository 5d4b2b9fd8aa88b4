"""The body of `nspawn run`: load the config, run it or print its plan, report, exit. Shared by
the console entry point's plain forms (nspawn/entry.py) and the click command
(nspawn/cli/run.py), so it imports neither click nor the CLI: the plain forms must not pay
for them."""

from __future__ import annotations

import os
import sys

from nspawn import exitcodes


def run_and_report(config_path: str | None, overrides: dict, *, verbosity: int = 0, dry_run: bool = False,
                   as_json: bool = False, json_fd: int | None = None) -> tuple[int, str | None]:
    """Load the config, run it (or print its plan), report; returns the launcher's exit code
    and the backend that ran the container (None when none ran). The result line goes to
    stdout with `as_json`, and to descriptor `json_fd` when given (bubblewrap's
    --json-status-fd), where no output of the container can be mixed with it."""
    if json_fd == 1:  # the same line as --json's, which starts it on a line of its own
        as_json, json_fd = True, None
    from nspawn import launch
    from nspawn.config.resolve import load_config
    from nspawn.errors import ConfigError
    from nspawn.ui import Reporter

    try:
        config = load_config(config_path, overrides, host=not dry_run, images="store" if dry_run else "pull")
    except ConfigError as e:
        Reporter(verbosity).problems(e.problems)
        # A script reading the result line gets one for every ending, this one too.
        result_line(refusal(e), as_json, json_fd)
        return e.exit_code, None
    if dry_run:
        import json

        print(json.dumps(launch.plan(config).to_json(), indent=2, ensure_ascii=False))
        return exitcodes.OK, None
    reporter = Reporter(verbosity)
    output = _LineTracking() if as_json else None  # the result line must start a line of its own
    result = launch.run(config, listener=reporter.event, stdout=output)
    for severity, line in result.outcome():
        getattr(reporter, severity)(line)
    for field, value in result.limits_applied.items():
        reporter.info(f"limit {field} = {value}")
    for phase, seconds in result.timings.items():
        reporter.debug(f"{phase}: {seconds * 1000:.1f} ms")
    if as_json or json_fd is not None:  # to_dict's deep copy, and json, only for a result line
        result_line(result.to_dict(), as_json, json_fd, at_line_start=output is None or output.at_line_start)
    return result.exit_code, result.backend


def result_line(data: dict, as_json: bool, json_fd: int | None, at_line_start: bool = True) -> None:
    """The result line: on stdout (after the container's output, on a line of its own) and to
    the --json-fd descriptor."""
    if not as_json and json_fd is None:
        return
    import json  # only here: a plain run imports no json (nor the re it brings)

    line = json.dumps(data, ensure_ascii=False) + "\n"
    if as_json:
        try:
            print(("" if at_line_start else "\n") + line, end="", flush=True)
        except OSError:  # its reader went away (`| head`): the run's own code still stands
            pass
    if json_fd is not None:
        from nspawn.output import write_all

        try:
            write_all(json_fd, line.encode())
        except OSError as e:  # closed by now, or its reader gone: the run's own code still stands
            print(f"nspawn: --json-fd {json_fd}: {e.strerror}", file=sys.stderr)


def refusal(error) -> dict:
    """The --json line of a run refused before anything was made (exit 2, or 126/127 for an
    executable the checks found missing or not executable): the problems, one object each."""
    return {"exit_code": error.exit_code, "error": error.one_line(), "container_id": None,
            "problems": [problem_json(p) for p in error.problems]}


def problem_json(problem) -> dict:
    """A Problem (nspawn.errors) as --json shows it: where, what, and the line stderr shows."""
    return {"source": problem.source, "path": problem.path, "line": problem.line, "column": problem.column,
            "message": problem.message, "exit_code": problem.exit_code, "text": str(problem)}


class _LineTracking:
    """The container's stdout, passed on to the launcher's own, remembering whether it ended a
    line: with --json the result line follows it, and must not be glued to a last line that
    has no newline."""

    # It is the launcher's stdout still: a terminal there may be the payload's, and a backend
    # may write there itself (without blocking on a stalled reader) and say what with `seen`.
    launchers_own = True

    def __init__(self):
        self.at_line_start = True

    def write(self, data: bytes) -> int:
        from nspawn.output import write_all

        if data:
            sys.stdout.flush()
            write_all(1, data)
            self.seen(data)
        return len(data)

    def seen(self, data: bytes) -> None:
        if data:
            self.at_line_start = data.endswith(b"\n")

    def flush(self) -> None:
        pass


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
