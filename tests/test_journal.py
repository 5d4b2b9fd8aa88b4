"""The rollback journal: reverse order, failures reported while the rest still runs, and a
dead launcher's journal finished by cleanup."""

import os
import subprocess
import sys
import textwrap

from nspawn.journal import Journal, finish, read_journals


def test_release_runs_in_reverse_and_survives_a_failing_release(tmp_path):
    order = []

    def ok(data):
        order.append(data["what"])

    def broken(data):
        order.append(data["what"])
        raise OSError("device busy")

    journal = Journal("c1", "linux", tmp_path)
    for what, kind in (("a", "ok"), ("b", "broken"), ("c", "ok")):
        journal.record(kind, what=what)
    report = journal.release_all({"ok": ok, "broken": broken})
    assert order == ["c", "b", "a"]
    assert report.released == ["ok c", "ok a"] and report.failed == ["broken b: device busy"]
    assert os.path.exists(journal.path)  # kept: cleanup may still finish it
    [orphan] = read_journals(str(tmp_path))
    assert not orphan.alive  # let go of, as a dead launcher's would be, though this one lives on


def test_a_clean_release_removes_the_journal(tmp_path):
    journal = Journal("c2", "linux", tmp_path)
    journal.record("ok", what="x")
    assert journal.release_all({"ok": lambda data: None}).failed == []
    assert not os.path.exists(journal.path)


def test_a_live_journal_is_locked_and_a_dead_ones_is_finished(tmp_path):
    marker = tmp_path / "resource"
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from nspawn.journal import Journal
        j = Journal("dead", "linux", Path({str(tmp_path)!r}))
        e = j.record("file", what={str(marker)!r})
        Path({str(marker)!r}).write_text("x")
        j.update(e, size=1)
        j.record("file", what="never-made")
        print("ready", flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    (orphan,) = read_journals(tmp_path)
    assert orphan.alive and orphan.entries[0].data == {"what": str(marker), "size": 1}
    assert finish(orphan, {}).failed == ["dead: its launcher is still running"]
    child.kill()
    child.wait()
    (orphan,) = read_journals(tmp_path)
    assert not orphan.alive
    released = []

    def remove(data):
        released.append(data["what"])
        if os.path.exists(data["what"]):
            os.unlink(data["what"])

    report = finish(orphan, {"file": remove})
    assert released == ["never-made", str(marker)] and not report.failed
    assert not marker.exists() and list(read_journals(tmp_path)) == []


def test_journal_lines_are_what_json_writes_and_reads_back():
    """The journal writes its lines without the json package; cleanup reads them with it."""
    import json

    from nspawn.journal import encoded

    values = [{"path": "/var/tmp/nspawn/x", "pid": 12345, "start": 1765100000.123456, "ok": True, "none": None},
              {"odd": "tab\there \"quoted\" back\\slash \x00\x1f é ☃ 𝄞", "bytes": os.fsdecode(b"/tmp/\xff\xfe")},
              {"nested": {"list": [1, 2.5, -3, [], {}], "tuple": (1, "two")}, 7: "int key", "big": 2 ** 70},
              [], {}, "", 0, -0.0, 1e300, 5e-324]
    for value in values:
        assert encoded(value) == json.dumps(value, separators=(",", ":")), value
        assert json.loads(encoded(value)) == json.loads(json.dumps(value)), value
