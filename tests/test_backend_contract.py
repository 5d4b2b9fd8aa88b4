"""Every registered backend keeps the contract of nspawn/backends/contract.py, checked the same
way for each: the module has what its registry entry promises, planning is pure and printable,
real runs (Linux as root, HCS against the simulator) record only journal kinds that have a
releaser, fill the Result fields the entry declares and say the container's process; and any
config `validate` accepts gives a dry run that exits 0 on the backend it names."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nspawn import backends, exitcodes
from nspawn.backends import BACKENDS, contract
from nspawn.config import fields
from nspawn.config.resolve import load_config
from nspawn.errors import ConfigError
from tests.conftest import ROOT, nspawn, skip_unless_ci

NAMES = sorted(BACKENDS)
LINUX_ROOT = sys.platform.startswith("linux") and os.geteuid() == 0

# A run in a fresh interpreter (the simulator writes its ledger, and a run owns its signals,
# there): the journal kinds recorded, the events heard, and the Result.
DRIVER = """
import json, sys
from nspawn import launch
from nspawn.config.resolve import load_config
from nspawn.journal import Journal
kinds, events = [], []
record = Journal.record
def spy(self, kind, **data):
    kinds.append(kind)
    return record(self, kind, **data)
Journal.record = spy
config = load_config(sys.argv[1], host=True)
result = launch.run(config, listener=lambda e, d: events.append([e, d]))
print(json.dumps({"result": result.to_dict(), "kinds": kinds, "events": events, "asked": list(config.limits.asked())}))
"""


@pytest.mark.parametrize("name", NAMES)
def test_the_module_has_what_its_registry_entry_promises(name):
    assert contract.check(backends.load(name), BACKENDS[name]) == []


def _config(name: str, tmp_path, **doc):
    if BACKENDS[name].flavour == "windows":
        doc = {"parent_layer_directory": "C:\\layers\\base", "process_directory": "C:\\job",
               "process_executable": "tool.exe", **doc}
    else:
        doc = {"process_executable": "/bin/sh", "process_arguments": ["-c", "exit 3"], **doc}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"backend": name, **doc}))
    return load_config(str(path))


WRITES = {"os.mkdir", "os.remove", "os.rmdir", "os.rename", "os.unlink", "os.symlink", "os.link", "os.chmod",
          "os.chown", "os.truncate", "shutil.rmtree", "shutil.copyfile", "subprocess.Popen", "os.system",
          "os.fork", "os.posix_spawn", "os.exec", "ctypes.dlopen", "socket.connect", "socket.bind"}
_touched: list | None = None


def _audit(event, args):
    if _touched is None:
        return
    if event in WRITES:
        _touched.append((event, args))
    elif event == "open" and len(args) > 1 and isinstance(args[1], str) and set(args[1]) & set("wax+"):
        _touched.append((event, args))


sys.addaudithook(_audit)


@pytest.mark.parametrize("name", NAMES)
def test_a_plan_is_json_and_making_it_touches_nothing(name, tmp_path):
    global _touched
    config = _config(name, tmp_path, max_ram_mb=64, max_cpu_percent=50, timeout_seconds=5,
                     environment={"A": "1"})
    _touched = []
    try:
        document = backends.load(name).plan(config).to_json()
        text = json.dumps(document)
    finally:
        touched, _touched = _touched, None
    assert touched == []
    assert text and _plain_data(document)


def _plain_data(value) -> bool:
    """Made of what JSON holds (tuples print as arrays), with no object that merely has a str()."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_data(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain_data(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _linux_runs(tmp_path):
    if not LINUX_ROOT:
        skip_unless_ci("the Linux backend's runs need root on Linux")
    job = {"backend": "linux", "process_executable": "/bin/sh"}
    runs = {
        "exit": {**job, "process_arguments": ["-c", "exit 3"], "max_ram_mb": 64, "max_processes": 20},
        "timeout": {**job, "process_arguments": ["-c", "sleep 5"], "timeout_seconds": 0.3, "stop_grace_seconds": 1},
        "signal": {**job, "process_arguments": ["-c", "kill -KILL $$"]},
        "oom": {**job, "process_executable": "/usr/bin/python3",  # the host's: a venv under /tmp is hidden inside
                "process_arguments": ["-c", "b = bytearray(200 * 2**20)"],
                "max_ram_mb": 32},
    }
    cases = {}
    for case, doc in runs.items():
        path = tmp_path / f"{case}.json"
        path.write_text(json.dumps(doc))
        cases[case] = (path, None)
    return cases


def _hcs_runs(tmp_path):
    from tests.hcs_sim.build import BuildUnavailable, build_simulator

    try:
        library = build_simulator()
    except BuildUnavailable as e:
        skip_unless_ci(f"HCS simulator not built: {e}")
    from tests.hcs.conftest import Host

    host = Host(library, tmp_path)
    host.script("exit3.sh", "exit 3\n")
    host.script("sleep.sh", "sleep 5\n")
    runs = {
        "exit": {"process_executable": "exit3.sh", "network": "nat", "max_ram_mb": 64},
        "exit-v1": {"process_executable": "exit3.sh", "network": "nat", "hcs_api": "v1"},
        "timeout": {"process_executable": "sleep.sh", "timeout_seconds": 0.3, "stop_grace_seconds": 1},
    }
    cases = {}
    for case, doc in runs.items():
        path = tmp_path / f"{case}.json"
        host.config(**doc).rename(path)  # the Host writes one config.json
        cases[case] = (path, host.env(None))
    return cases


def _drive(path, env=None) -> dict:
    ran = subprocess.run([sys.executable, "-c", DRIVER, str(path)], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **(env or {})}, timeout=120)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout.splitlines()[-1])


# Per backend: {case: (config path, environment)} for a run that exits 3 ("exit"), one that
# times out ("timeout"), and one per Result field it reports ("signal", "oom").
RUNS = {"linux": _linux_runs, "hcs": _hcs_runs}


def test_every_backend_has_its_runs():
    assert set(RUNS) == set(BACKENDS)


@pytest.fixture(params=NAMES)
def runs(request, tmp_path):
    """{case: driven run} of one backend, seen from the outside."""
    name = request.param
    return name, {case: _drive(path, env) for case, (path, env) in RUNS[name](tmp_path).items()}


def test_real_runs_keep_the_contract(runs):
    name, driven = runs
    entry, module = BACKENDS[name], backends.load(name)
    for case, run in driven.items():
        assert run["result"]["error"] is None, (case, run["result"])
        assert run["kinds"] and set(run["kinds"]) <= set(module.RELEASERS), (case, run["kinds"])
        assert run["result"]["rollback_failures"] == [], case
        heard = {event for event, _ in run["events"]}
        assert heard <= {contract.PHASE, contract.WARNING, contract.PROCESS}, (case, heard)
        # No limit asked is dropped without a word: each was applied or said not to be enforced.
        said = set(run["result"]["limits_applied"]) | set(run["result"]["limits_not_enforced"])
        assert said >= set(run["asked"]), (case, said, run["asked"])
    exited = driven["exit"]
    assert exited["result"]["exit_code"] == 3
    assert exited["asked"], "the exit case asks for limits"
    processes = [d for e, d in exited["events"] if e == contract.PROCESS]
    assert processes and all(isinstance(d["pid"], int) and d["pid"] > 0 for d in processes)
    timed_out = driven["timeout"]["result"]
    if "timed_out" in entry.reports:
        assert timed_out["timed_out"] and timed_out["exit_code"] == exitcodes.TIMEOUT
    if "signal" in entry.reports:
        assert driven["signal"]["result"]["signal"] == 9
    if "oom_killed" in entry.reports:
        assert driven["oom"]["result"]["oom_killed"]
    if "peak_memory_bytes" in entry.reports:
        assert 0 < driven["oom"]["result"]["peak_memory_bytes"] <= 32 * 2**20
    for field in set(contract.RESULT_FIELDS) - set(entry.reports):
        # What a backend does not declare it never claims.
        assert not any(run["result"][field] for run in driven.values()), field


# -- validate accepts ⇒ the dry run exits 0 ---------------------------------------------------

def _value(field: fields.Field):
    """Values for one field: valid ones of every shape, and the awkward ones users write."""
    schema = field.schema
    texts = st.one_of(st.text(max_size=12), st.sampled_from(
        ["/w", "/w/x y", "C:\\w", "C:/w", "c:\\w\\a\"b", "x\"y", "..", "../x", "/proc", "/", "tool.exe", "bin/tool",
         "a b", "\\\\srv\\share", "D:\\", "/dev/shm"]))
    if field.items:
        item = st.fixed_dictionaries({f.key: _value(f) for f in field.items if f.default is None},
                                     optional={f.key: _value(f) for f in field.items if f.default is not None})
        return st.lists(item, max_size=2)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if fields.is_integer(field):
        top = schema.get("maximum", 2**64)
        ints = st.integers(min_value=0, max_value=top)
        return st.one_of(ints, ints.map(float).filter(lambda v: v <= top and v == int(v)),
                         ints.map(hex)) if "oneOf" in schema else st.one_of(ints, st.integers(0, 10**6).map(float))
    kind = schema.get("type")
    if kind == "number":
        return st.floats(min_value=schema["minimum"], max_value=schema["maximum"], allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(texts, max_size=3)
    if kind == "object":
        return st.dictionaries(st.text(min_size=1, max_size=5), texts, max_size=2)
    return texts


_optional = {f.key: _value(f) for f in fields.FIELDS if f.key not in ("process_executable", "backend")}
# Any document, and documents seeded for each backend's flavour, so that every backend gets
# configs its validate accepts (an HCS config needs a parent layer and Windows paths).
configs = st.one_of(
    st.fixed_dictionaries({"process_executable": _value(fields.BY_KEY["process_executable"])},
                          optional={**_optional, "backend": _value(fields.BY_KEY["backend"])}),
    *(st.fixed_dictionaries({"backend": st.just(name), "process_executable": _value(fields.BY_KEY["process_executable"]),
                             **({"parent_layer_directory": st.sampled_from(["C:\\layers\\p", "D:/l"])}
                                if entry.flavour == "windows" else {})},
                            optional={k: v for k, v in _optional.items() if k != "parent_layer_directory"})
      for name, entry in BACKENDS.items()),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(configs)
def test_whatever_validate_accepts_dry_runs_on_the_backend_it_names(tmp_path, capsys, document):
    """`nspawn run --dry-run`'s own body, in this process: validate's verdict decides, and a
    config it accepts prints its plan and exits 0."""
    from nspawn.runcmd import run_and_report

    path = tmp_path / "c.json"
    path.write_text(json.dumps(document))
    try:
        load_config(str(path))
        accepted = True
    except ConfigError as e:
        assert e.exit_code == exitcodes.USAGE and all(str(p).strip() for p in e.problems)
        accepted = False
    capsys.readouterr()
    code, _ = run_and_report(str(path), {}, dry_run=True)
    out, err = capsys.readouterr()
    assert code == (exitcodes.OK if accepted else exitcodes.USAGE), err
    assert "internal error" not in err and "Traceback" not in err
    if accepted:
        assert json.loads(out)


@pytest.mark.parametrize("document", [
    {"backend": "hcs", "parent_layer_directory": "C:\\l", "process_executable": "C:\\a\"b.exe"},
    {"backend": "linux", "process_executable": "/bin/true", "max_ram_mb": 512.0, "cpus_count": 1.0},
    {"process_executable": "/bin/true", "cpu_affinity_hex": 1.0},
    {"backend": "hcs", "parent_layer_directory": "C:\\l", "process_executable": "x.exe", "max_ram_mb": 512.0},
])
def test_the_command_line_never_ends_in_an_internal_error(tmp_path, document):
    """The same promise through the command line users run: validate's verdict and the dry
    run's agree, and neither prints a traceback."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps(document))
    checked, dry = nspawn("validate", str(path)), nspawn("run", "--dry-run", "-c", str(path))
    for ran in (checked, dry):
        assert "Traceback" not in ran.stderr and "internal error" not in ran.stderr, ran.stderr
    assert checked.returncode in (0, 2) and dry.returncode == checked.returncode, (checked.stderr, dry.stderr)
    if dry.returncode == 0:
        assert "512.0" not in dry.stdout
