"""How a Result says its outcome: the lines a run prints on stderr, the same lines in a batch
job's report (read from the Result's dict), and the one line of its JUnit case."""

import pytest

from nspawn.result import ERROR, WARNING, Result, outcome_of


def _result(exit_code: int = 0, **fields) -> Result:
    result = Result("c1", "linux", exit_code)
    for name, value in fields.items():
        setattr(result, name, value)
    return result


OUTCOMES = {
    "success": (_result(), []),
    "the process's own failing exit": (_result(3), []),
    "error": (_result(127, error="/job/x: not found"), [(ERROR, "/job/x: not found")]),
    "rollback failures": (_result(125, rollback_failures=["cgroup /a: busy", "mount /b: busy"]),
                          [(ERROR, "not released: cgroup /a: busy"), (ERROR, "not released: mount /b: busy")]),
    "timeout": (_result(124, timed_out=True, signal=9),
                [(ERROR, "the timeout expired; the container was stopped")]),
    "oom": (_result(137, oom_killed=True, signal=9),
            [(ERROR, "the memory limit was hit; the container was killed")]),
    "oom with its peak": (_result(137, oom_killed=True, signal=9, peak_memory_bytes=64 * 2**20),
                          [(ERROR, "the memory limit was hit (at 64 MiB); the container was killed")]),
    "stopped by a signal": (_result(130, interrupted_by=2, signal=15),
                            [(WARNING, "stopped by signal 2; everything made was rolled back")]),
    "killed by a signal": (_result(143, signal=15), [(WARNING, "the container process was killed by signal 15")]),
    # Stopped, but something could not be released: "everything was rolled back" would be a lie.
    "stopped, not all released": (_result(143, interrupted_by=15, rollback_failures=["scratch /s: busy"]),
                                  [(ERROR, "not released: scratch /s: busy"), (WARNING, "stopped by signal 15")]),
    "error and a rollback failure": (_result(125, error="setting up failed", rollback_failures=["cgroup /x: busy"]),
                                     [(ERROR, "setting up failed"), (ERROR, "not released: cgroup /x: busy")]),
}


@pytest.mark.parametrize("case", OUTCOMES)
def test_each_outcome_is_said_once_most_serious_first(case):
    result, lines = OUTCOMES[case]
    assert result.outcome() == lines
    assert outcome_of(result.to_dict()) == lines  # as a batch job's report reads it


@pytest.mark.parametrize("case", OUTCOMES)
def test_the_one_line_is_the_lines_a_run_prints_joined(case):
    result, lines = OUTCOMES[case]
    assert result.one_line() == ("; ".join(text for _, text in lines) if lines else None)

