"""How the problems with an input are said: each on its own error line by the launcher's
Reporter, or one line where a report has room for one."""

import io

from nspawn.errors import ConfigError, Problem
from nspawn.ui import QUIET, Reporter

PROBLEMS = [Problem("c.json", f"$.k{i}", "unknown key", 1, i) for i in range(3)]


def test_the_reporter_shows_every_problem_on_its_own_line_even_when_quiet():
    stream = io.StringIO()
    Reporter(QUIET, stream=stream).problems(PROBLEMS[:2] + [Problem("command line", "", "give a command")])
    assert stream.getvalue().splitlines() == ["error: c.json:1:0: $.k0: unknown key", "error: c.json:1:1: $.k1: unknown key",
                                              "error: command line: give a command"]


def test_a_config_error_on_one_line_names_the_first_problem_and_counts_the_rest():
    assert ConfigError(PROBLEMS[:1]).one_line() == "c.json:1:0: $.k0: unknown key"
    assert ConfigError(PROBLEMS[:2]).one_line() == "c.json:1:0: $.k0: unknown key (and 1 more problem)"
    assert ConfigError(PROBLEMS).one_line() == "c.json:1:0: $.k0: unknown key (and 2 more problems)"
