"""Exceptions that the CLI turns into one-line messages and exit codes."""

from __future__ import annotations

from nspawn import exitcodes
from nspawn.records import record


@record
class Problem:
    """One thing wrong with an input: where it is and what was expected."""

    source: str  # file name, or "command line"
    path: str  # JSON path such as "$.mounts[1].container_path"; "" for the whole input
    message: str
    line: int | None = None
    column: int | None = None
    exit_code: int = exitcodes.USAGE  # 126/127 for an executable that cannot run or is missing

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class NspawnError(Exception):
    exit_code = exitcodes.LAUNCHER


class ConfigError(NspawnError):
    """All the problems found in one input, reported together."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        codes = {p.exit_code for p in self.problems}
        self.exit_code = codes.pop() if len(codes) == 1 else exitcodes.USAGE
        super().__init__("\n".join(str(p) for p in self.problems))

    def one_line(self) -> str:
        """The first problem, and how many more: where one line is wanted (a batch's report);
        a Reporter shows them all (problems)."""
        first = str(self.problems[0]) if self.problems else str(self)
        more = len(self.problems) - 1
        return first + (f" (and {more} more problem{'s' * (more > 1)})" if more > 0 else "")


class LaunchError(NspawnError):
    """The launcher or backend failed; what was made has been rolled back."""

    def __init__(self, message: str, exit_code: int = exitcodes.LAUNCHER):
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; raised so that every rollback still runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
