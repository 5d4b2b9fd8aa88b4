"""What the benchmarks share: the nspawn a user runs, an environment whose state stays in a
temporary directory, timing commands in turns (so that a machine whose speed drifts shifts them
all alike), the launcher's peak memory, peers that may be missing, and the line that says of a
target MET or MISSED with the comparison beside it. Asserts nothing: it measures."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20


def nspawn_argv() -> list[str]:
    """The console script beside this interpreter, as users run it (byte-compiled by pip);
    `python -m nspawn` only without one, as it adds runpy's cost users do not pay."""
    script = os.path.join(os.path.dirname(sys.executable), "nspawn")
    if os.path.exists(script):
        from installed import note_if_stale

        note_if_stale(sys.executable)
        return [script]
    print(f"note: no console script at {script}; timing python -m nspawn (runpy adds to every figure)")
    return [sys.executable, "-m", "nspawn"]


def environment(work: str) -> dict:
    """os.environ with nspawn's state, scratch and caches under `work`, and bytecode written
    as an installed copy has it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(NSPAWN_STATE_DIR=os.path.join(work, "state"), NSPAWN_CACHE_DIR=os.path.join(work, "cache"),
               NSPAWN_SCRATCH_DIR=os.path.join(work, "scratch"))
    return env


def once(argv: list[str], env: dict, drain: bool = False) -> float:
    """Wall seconds of one run, which must succeed. Its stdout is /dev/null, or with `drain` a
    pipe this process reads to its end (1 MiB reads, thrown away), as a consumer of the
    output would."""
    start = time.perf_counter()
    if not drain:
        subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start
    with subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as process:
        fd = process.stdout.fileno()
        while os.read(fd, MIB):
            pass
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, argv)
    return time.perf_counter() - start


def peak_rss(argv: list[str], env: dict) -> int | str:
    """Peak RSS in bytes of one run of argv (the highest of it and each process it waited for,
    as wait4 reports it), or why it cannot be measured. Through GNU time, whose child starts
    from its small image: a child spawned by this interpreter is charged this interpreter's
    pages until it execs, so its own wait4 figure would be this process's size."""
    if not os.path.exists("/usr/bin/time"):
        return "GNU time (/usr/bin/time) is not installed"
    return timed_peak(argv, env)[1]


def timed_peak(argv: list[str], env: dict) -> tuple[float, int | str]:
    """(wall seconds, peak_rss's figure) of one run; GNU time adds about a millisecond."""
    if not os.path.exists("/usr/bin/time"):
        return once(argv, env), "GNU time (/usr/bin/time) is not installed"
    with tempfile.NamedTemporaryFile("r") as out:
        seconds = once(["/usr/bin/time", "-o", out.name, "-f", "%M", *argv], env)
        return seconds, int(out.read().split()[-1]) * 1024


class Timings:
    """name -> seconds of each run; `skipped`: name -> why."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.skipped: dict[str, str] = {}

    def median_ms(self, name: str) -> float:
        return statistics.median(self.times[name]) * 1000

    def paired_ms(self, name: str, against: str) -> float:
        """The median of the rounds' own differences, name minus against."""
        return statistics.median(a - b for a, b in zip(self.times[name], self.times[against])) * 1000

    def has(self, *names: str) -> bool:
        return all(name in self.times for name in names)


def in_turns(commands: dict[str, list[str] | str], runs: int, env: dict, drain: bool = False) -> Timings:
    """Each command once per round, `runs` rounds, after a warm-up run each (caches, bytecode,
    and proof it runs here); paired_ms pairs the rounds' runs. A command given as a string is
    a peer that is missing: the string says why, and it is skipped."""
    timings = Timings()
    for name, argv in commands.items():
        if isinstance(argv, str):
            timings.skipped[name] = argv
            continue
        try:
            once(argv, env, drain)
            timings.times[name] = []
        except (subprocess.CalledProcessError, OSError) as e:
            timings.skipped[name] = f"it failed here ({e})"
    for round_ in range(runs):
        names = list(timings.times)
        # every other round in the other order: a command's place in the round (after which
        # other, warmer or colder caches) must not pass for a difference between them
        for name in names if round_ % 2 == 0 else names[::-1]:
            try:
                seconds = once(commands[name], env, drain)
            except (subprocess.CalledProcessError, OSError) as e:
                timings.skipped[name] = f"a run failed ({e})"
                del timings.times[name]
                continue
            timings.times[name].append(seconds)
    return timings


def peer(name: str, argv: list[str]) -> list[str] | str:
    """argv when its program is installed, else why it is skipped."""
    return argv if shutil.which(argv[0]) else f"{argv[0]} is not installed ({name})"


def print_timings(timings: Timings) -> None:
    width = max(map(len, [*timings.times, *timings.skipped]), default=0)
    for name, times in timings.times.items():
        print(f"  {name:<{width}}  {timings.median_ms(name):8.1f} ms median (min {min(times) * 1000:.1f},"
              f" max {max(times) * 1000:.1f})")
    for name, why in timings.skipped.items():
        print(f"  {name:<{width}}  skipped: {why}")


VERDICTS: list[tuple[str, bool | None]] = []


def target(what: str, value: float | None, limit: float | None, comparison: str, higher_is_better: bool = False) -> None:
    """One target's line: the figure, the limit it is held to and how that limit was made,
    and MET or MISSED; SKIPPED when a figure or its reference could not be measured here."""
    if value is None or limit is None:
        VERDICTS.append((what, None))
        print(f"SKIPPED  {what}: {comparison}")
        return
    met = value >= limit if higher_is_better else value <= limit
    VERDICTS.append((what, met))
    print(f"{'MET     ' if met else 'MISSED  '} {what}: {value:.1f} {'>=' if higher_is_better else '<='} {limit:.1f}"
          f" ({comparison})")


def summary() -> None:
    met = sum(1 for _, ok in VERDICTS if ok)
    missed = [what for what, ok in VERDICTS if ok is False]
    skipped = [what for what, ok in VERDICTS if ok is None]
    print(f"targets: {met} met, {len(missed)} missed, {len(skipped)} skipped" + "".join(f"\n  missed: {w}" for w in missed))
