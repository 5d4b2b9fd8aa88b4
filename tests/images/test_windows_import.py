"""A Windows image pulled from the test registry and imported through the simulated HCS into
the store's windowsfilter form, then run by reference: the simulator stands in for Windows
(its build, 20348, is the host's), and its HcsImportLayer checks the layer data, the parent
folders and the backup privileges as Windows would refuse them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from nspawn.backends.hcs.native import advapi32, computestorage, kernel32
from nspawn.backends.hcs.native.errors import HcsError
from nspawn.images import store as store_module
from tests.conftest import ROOT, nspawn
from tests.hcs.conftest import Host
from tests.hcs_sim.fixtures import sim, sim_library  # noqa: F401 (fixtures)
from tests.hcs_sim.ledger import LEDGER_ENV
from tests.images.conftest import RegistryServer, _need_tools, add_manifest, push_layout, set_index, tar_bytes


def entry(name: str, data: bytes | None = None, **pax):
    info = tarfile.TarInfo(name.rstrip("/"))
    info.type = tarfile.DIRTYPE if data is None else tarfile.REGTYPE
    info.mode = 0o755 if data is None else 0o644
    # what Windows layers carry on every entry: the attributes and the security descriptor
    info.pax_headers = {"MSWINDOWS.fileattr": "32" if data is not None else "16",
                        "MSWINDOWS.rawsd": "AQAEgBQAAAAkAAAAAAAAADAAAAA=", **pax}
    return info, data


BASE = [entry("Files/"), entry("Files/Windows/"), entry("Files/Windows/System32/"),
        entry("Files/Windows/System32/cmd.exe", b"MZ the shell"), entry("Files/Windows/System32/old.dll", b"MZ old"),
        entry("Hives/"), entry("Hives/Software_Delta", b"regf"), entry("UtilityVM/"), entry("UtilityVM/Files/")]
TOP = [entry("Files/"), entry("Files/job/"), entry("Files/job/greeting.txt", b"from the top layer\n"),
       entry("Files/Windows/"), entry("Files/Windows/System32/"), entry("Files/Windows/System32/.wh.old.dll", b"")]
CONFIG = {"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.2113",
          "config": {"Env": ["Path=C:\\Windows", "GREETING=from the pulled image"], "WorkingDir": "C:\\job",
                     "Cmd": ["show.sh", "one"]}}


@pytest.fixture(scope="module")
def windows_image(tmp_path_factory):
    """(reference, the 20348 manifest's digest, layer digests bottom first) in a registry of
    its own: an index with a windows entry for this host's build and one for another."""
    _need_tools()
    server = RegistryServer(tmp_path_factory.mktemp("registry")).start()
    layout = str(tmp_path_factory.mktemp("windows") / "oci")
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": []}, f)
    layers = [tar_bytes(BASE), tar_bytes(TOP)]
    ours = add_manifest(layout, layers, CONFIG)
    other = add_manifest(layout, [tar_bytes(BASE)], {**CONFIG, "os.version": "10.0.17763.5830"})
    set_index(layout, "win", [
        {**other, "platform": {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.5830"}},
        {**ours, "platform": {"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.2113"}}])
    ref = f"{server.host}/windows/nanoserver:ltsc2022"
    push_layout(layout, "win", ref, all_platforms=True)
    with open(os.path.join(layout, "blobs", "sha256", ours["digest"].split(":")[1])) as f:
        digests = [layer["digest"] for layer in json.load(f)["layers"]]
    yield ref, ours["digest"], digests
    server.stop()


@pytest.fixture
def host(sim_library, tmp_path, monkeypatch):  # noqa: F811 (the fixture imported above)
    machine = Host(sim_library, tmp_path)
    monkeypatch.setenv("NSPAWN_DOCKER_ROOT", str(tmp_path / "docker"))  # empty: only the store has the image
    monkeypatch.setenv("NSPAWN_STORE", str(tmp_path / "store"))
    return machine


def pull(host: Host, ref: str, faults: str | None = None, **env):
    done = nspawn("pull", "--platform", "windows/amd64", ref, env={**host.env(faults), **env})
    return done, host._ledger() or {}


def imports(ledger: dict) -> list:
    return [c["args"] for c in ledger.get("calls", []) if c["call"] == "computestorage!HcsImportLayer"]


def store_state(tmp_path) -> dict:
    store = tmp_path / "store"
    return {sub: sorted(os.listdir(store / sub)) if (store / sub).is_dir() else []
            for sub in ("windowsfilter", "images", "refs", "tmp")}


def test_a_windows_image_is_imported_through_hcs_and_runs_by_reference(host, tmp_path, windows_image):
    ref, digest, (base, top) = windows_image
    done, ledger = pull(host, ref)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [ref, digest]  # the entry for the host's build, not 17763's
    folders = {d: str(tmp_path / "store" / "windowsfilter" / d.split(":")[1]) for d in (base, top)}
    assert store_state(tmp_path)["windowsfilter"] == sorted(d.split(":")[1] for d in (base, top))
    # HCS made each layer from the tar as it is, over its parents, named top-most first
    (base_call, top_call) = imports(ledger)
    assert json.loads(base_call[2])["Layers"] == []
    (parent,) = json.loads(top_call[2])["Layers"]
    assert parent["Path"] == folders[base] and len(parent["Id"]) == 36
    assert {c["call"] for c in ledger["calls"]} >= {"advapi32!AdjustTokenPrivileges", "advapi32!LookupPrivilegeValueW"}
    top_folder = tmp_path / "store" / "windowsfilter" / top.split(":")[1]
    assert (top_folder / "Files" / "job" / "greeting.txt").read_text() == "from the top layer\n"
    # the whiteout is a line of the deletions file, as hcsshim writes it, not a file of C:\
    assert (top_folder / "tombstones.txt").read_bytes() == b"\xef\xbb\xbfVersion 1.0\n\\Windows\\System32\\old.dll\n"
    assert os.listdir(top_folder / "Files" / "Windows" / "System32") == []
    assert json.loads((top_folder / "layerchain.json").read_text()) == [folders[base]]
    assert json.loads((tmp_path / "store" / "windowsfilter" / base.split(":")[1] / "layerchain.json").read_text()) == []
    assert store_state(tmp_path)["tmp"] == []

    host.script("show.sh", 'echo "$GREETING" "$@"; pwd\n')
    config = tmp_path / "image.json"
    config.write_text(json.dumps({"backend": "hcs", "image": ref, "process_directory": str(host.job),
                                  "mapped_directory": "C:\\job"}))
    plan = json.loads(nspawn("run", "--dry-run", "-c", str(config), env=host.env(None)).stdout)
    assert plan["layers"]["parent"] == folders[top] and plan["layers"]["chain"] == [folders[top], folders[base]]
    ran = nspawn("run", "-c", str(config), env=host.env(None))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["from the pulled image one", str(host.job)]
    created = next(c for c in host._ledger()["calls"] if c["call"] == "computecore!HcsCreateComputeSystem")
    assert folders[base] in created["args"][1] and folders[top] in created["args"][1]

    again, ledger = pull(host, ref)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already present") == 2 and imports(ledger) == []
    assert not any(c["call"].startswith("advapi32!") for c in ledger["calls"])  # nothing to import, no privilege asked


def test_a_token_without_the_backup_privileges_is_refused_in_words(host, tmp_path, windows_image):
    ref, _, _ = windows_image
    done, ledger = pull(host, ref, NSPAWN_HCS_SIM_NO_PRIVILEGE="SeRestorePrivilege")
    assert done.returncode == 125
    assert done.stderr == (
        f"error: cannot pull {ref}: Windows layers are imported and deleted with SeBackupPrivilege and "
        "SeRestorePrivilege: this process's token does not hold SeRestorePrivilege (AdjustTokenPrivileges failed: 0x80070514 "
        "ERROR_NOT_ALL_ASSIGNED); expected nspawn run as an administrator (from an elevated prompt), whose token "
        "holds them\n")
    assert imports(ledger) == []
    assert store_state(tmp_path) == {"windowsfilter": [], "images": [], "refs": [], "tmp": []}


def test_an_interrupted_import_leaves_nothing_a_later_run_uses(host, tmp_path, windows_image):
    ref, digest, layers = windows_image
    killed, _ = pull(host, ref, faults="HcsImportLayer=signal:9")
    assert killed.returncode == -9
    left = store_state(tmp_path)
    assert left["windowsfilter"] == [] and left["images"] == [] and left["refs"] == [] and len(left["tmp"]) == 1
    config = tmp_path / "image.json"
    config.write_text(json.dumps({"backend": "hcs", "image": ref, "process_directory": str(host.job)}))
    refused = nspawn("run", "-c", str(config), env=host.env(None))
    assert refused.returncode == 2 and "is not in the image store" in refused.stderr

    failed, _ = pull(host, ref, faults=f"HcsImportLayer={0x80370112:#x}")
    assert failed.returncode == 125
    assert "could not be imported: HcsImportLayer failed: 0x80370112 HCS_E_INVALID_LAYER" in failed.stderr
    assert store_state(tmp_path) == {"windowsfilter": [], "images": [], "refs": [], "tmp": []}  # the dead pull's swept

    done, ledger = pull(host, ref)
    assert done.returncode == 0 and done.stdout.split() == [ref, digest], done.stderr
    assert len(imports(ledger)) == 2 and store_state(tmp_path)["windowsfilter"] == sorted(d[7:] for d in layers)


def layer_source(root) -> str:
    (root / "Files" / "Windows").mkdir(parents=True)
    (root / "Files" / "Windows" / "notepad.exe").write_bytes(b"MZ")
    return str(root)


def test_the_simulated_import_refuses_what_windows_refuses(sim, tmp_path):  # noqa: F811
    source = layer_source(tmp_path / "source")
    with pytest.raises(HcsError) as e:
        computestorage.import_layer(str(tmp_path / "a"), source, [])
    assert e.value.win32 == 1314  # ERROR_PRIVILEGE_NOT_HELD: the privileges were never enabled
    advapi32.enable(advapi32.BACKUP, advapi32.RESTORE)
    with pytest.raises(HcsError) as e:
        computestorage.import_layer(str(tmp_path / "b"), source, [("0d3b1c55-0000-4000-8000-000000000001",
                                                                     str(tmp_path / "missing"))])
    assert e.value.win32 == 3  # ERROR_PATH_NOT_FOUND: a parent that does not exist
    with pytest.raises(HcsError) as e:
        computestorage.import_layer(str(tmp_path / "c"), source, [("not-a-guid", source)])
    assert e.value.name == "E_INVALIDARG" or e.value.hresult == 0x80070057
    with pytest.raises(HcsError) as e:
        computestorage.import_layer(str(tmp_path / "d"), str(tmp_path), [])
    assert e.value.name == "HCS_E_INVALID_LAYER"  # no Files folder: not a layer in transport form
    (tmp_path / "source" / "tombstones.txt").write_text("Version 1.0\n/Windows/gone.exe\n")
    with pytest.raises(HcsError) as e:
        computestorage.import_layer(str(tmp_path / "e"), source, [])
    assert e.value.name == "HCS_E_INVALID_LAYER"  # deletions not in hcsshim's form
    (tmp_path / "source" / "tombstones.txt").write_text("\ufeffVersion 1.0\n\\Windows\\gone.exe\n", encoding="utf-8")
    computestorage.import_layer(str(tmp_path / "base"), source, [])
    assert (tmp_path / "base" / "Files" / "Windows" / "notepad.exe").read_bytes() == b"MZ"
    with pytest.raises(HcsError) as e:
        computestorage.import_layer(str(tmp_path / "base"), source, [])
    assert e.value.win32 == 183  # ERROR_ALREADY_EXISTS: a layer is imported once
    assert not any(os.path.exists(tmp_path / name) for name in ("a", "b", "c", "d", "e"))


def test_the_stores_windows_locks_and_sweep_through_kernel32(sim, tmp_path, monkeypatch):  # noqa: F811
    """What the store does on Windows instead of flock and os.kill(pid, 0) (which would
    terminate the process there), against the simulated kernel32."""
    monkeypatch.setattr(store_module, "_windows", lambda: True)
    store = store_module.Store(str(tmp_path / "store"))
    store.prepare()
    lock_file = store.path("locks", "layer.lock")
    with store.lock("layer", shared=True):
        other = os.open(lock_file, os.O_RDWR)
        try:
            kernel32.lock_file(other, exclusive=False, wait=False)  # shared beside shared
        finally:
            os.close(other)
        other = os.open(lock_file, os.O_RDWR)
        try:
            with pytest.raises(HcsError) as e:
                kernel32.lock_file(other, exclusive=True, wait=False)
            assert e.value.win32 == 33  # ERROR_LOCK_VIOLATION
        finally:
            os.close(other)
    other = os.open(lock_file, os.O_RDWR)
    try:
        kernel32.lock_file(other, exclusive=True, wait=False)  # free once the store's lock is left
    finally:
        os.close(other)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "store" / "tmp" / f"{dead.pid}-x").mkdir()
    mine = store.temporary()
    assert store.sweep_tmp() == [f"{dead.pid}-x"] and os.path.isdir(mine)
    assert {"kernel32!LockFileEx", "kernel32!OpenProcess", "kernel32!GetExitCodeProcess"} <= {
        c["call"] for c in sim.ledger()["calls"]}


def test_two_pulls_at_once_import_each_layer_once(host, tmp_path, windows_image):
    ref, digest, layers = windows_image
    ledgers = [tmp_path / f"ledger{i}.json" for i in range(2)]
    # a slow import, so that the second pull comes to a layer while the first holds it
    pulls = [subprocess.Popen([sys.executable, "-m", "nspawn", "pull", "--platform", "windows/amd64", ref],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, **host.env("HcsImportLayer=delay:300"), LEDGER_ENV: str(ledger)})
             for ledger in ledgers]
    for done in pulls:
        out, err = done.communicate(timeout=60)
        assert done.returncode == 0 and out.split() == [ref, digest], err
    made = [args for ledger in ledgers for args in imports(json.loads(ledger.read_text()))]
    assert sorted(json.loads(args[2])["Layers"] == [] for args in made) == [False, True]  # the base once, the top once
    assert store_state(tmp_path)["windowsfilter"] == sorted(d[7:] for d in layers)


def test_prune_destroys_unnamed_windows_layers_through_hcs_and_keeps_a_running_containers(
        host, tmp_path, windows_image):
    ref, _, layers = windows_image
    assert pull(host, ref)[0].returncode == 0
    host.script("wait.sh", "echo started; read line; echo \"$line\"\n")
    config = tmp_path / "wait.json"
    config.write_text(json.dumps({"backend": "hcs", "image": ref, "process_directory": str(host.job),
                                  "mapped_directory": "C:\\job", "process_executable": "wait.sh"}))
    running = subprocess.Popen([sys.executable, "-m", "nspawn", "run", "-c", str(config)], cwd=ROOT, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, **host.env(None), LEDGER_ENV: str(tmp_path / "run-ledger.json")})
    try:
        assert running.stdout.readline() == "started\n"
        names = [store_module.ref_of_file(n) for n in os.listdir(tmp_path / "store" / "refs")]
        assert len(names) == 2  # the tag, and the index's digest
        assert nspawn("rmi", *names, env=host.env(None)).returncode == 0
        refused = nspawn("prune", env={**host.env(None), "NSPAWN_HCS_SIM_NO_PRIVILEGE": "SeBackupPrivilege"})
        assert refused.returncode == 125 and refused.stderr.startswith(
            "error: cannot prune: Windows layers are imported and deleted with SeBackupPrivilege and "
            "SeRestorePrivilege: this process's token does not hold SeBackupPrivilege")
        pruned = nspawn("prune", env=host.env(None))
        assert pruned.returncode == 0, pruned.stderr
        assert pruned.stdout.count("a container uses it") == 2
        # the running container's scratch layer beside them is no image layer: left alone
        assert [n for n in store_state(tmp_path)["windowsfilter"] if len(n) == 64] == sorted(d[7:] for d in layers)
        assert len(store_state(tmp_path)["windowsfilter"]) == 3
        out, err = running.communicate("go\n", timeout=30)
        assert (running.returncode, out) == (0, "go\n"), err
    finally:
        if running.poll() is None:
            running.kill()
    host._ledger()
    pruned = nspawn("prune", env=host.env(None))
    assert pruned.returncode == 0 and pruned.stdout.count("deleted sha256:") == 2, pruned.stderr
    destroyed = [c for c in host._ledger()["calls"] if c["call"] == "computestorage!HcsDestroyLayer"]
    assert len(destroyed) == 2
    assert store_state(tmp_path) == {"windowsfilter": [], "images": [], "refs": [], "tmp": []}


def test_before_computestorage_the_layer_is_imported_through_vmcompute(sim, tmp_path, monkeypatch):  # noqa: F811
    """On Windows Server 2016 computestorage.dll does not exist: the loader's LibraryUnavailable
    (what load() raises there) sends the import to vmcompute.dll's ImportLayer."""
    from nspawn.backends.hcs.native.errors import LibraryUnavailable
    from nspawn.images import winlayer

    def absent(*args):
        raise LibraryUnavailable("computestorage.dll", "the specified module could not be found")

    monkeypatch.setattr(computestorage, "import_layer", absent)
    store = store_module.Store(str(tmp_path / "store"))
    store.prepare()
    os.makedirs(store.path("windowsfilter"))
    base, top = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    advapi32.enable(advapi32.BACKUP, advapi32.RESTORE)
    for digest, parents in ((base, []), (top, [base])):
        work = store.temporary()
        source = layer_source(tmp_path / digest[7:15])
        winlayer.import_layer(store, digest, source, parents, work)
    assert (tmp_path / "store" / "windowsfilter" / ("b" * 64) / "Files" / "Windows" / "notepad.exe").exists()
    assert json.loads((tmp_path / "store" / "windowsfilter" / ("b" * 64) / "layerchain.json").read_text()) == [
        store.windows_layer_dir(base)]
    (_, imported) = [c["args"] for c in sim.ledger()["calls"] if c["call"] == "vmcompute!ImportLayer"]
    assert imported["flavour"] == 1 and imported["id"] == "imported"
    assert [layer["path"] for layer in imported["layers"]] == [store.windows_layer_dir(base)]
    sim.fail("ImportLayer", 0xC0370112)
    with pytest.raises(winlayer.LayerError) as e:
        winlayer.import_layer(store, "sha256:" + "c" * 64, source, [top], store.temporary())
    assert "ImportLayer failed: 0xC0370112 ERROR_VMCOMPUTE_INVALID_LAYER" in str(e.value)


def symlink(name: str, target: str):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


@pytest.mark.parametrize("entries, said", [
    ([entry("Files/"), entry("Files/../../escaped", b"x")], "climbs out of the layer's root with '..'"),
    ([entry("Windows/notepad.exe", b"MZ")], "is outside Files/, Hives/ and UtilityVM/; expected a Windows layer"),
    ([entry("Files/"), entry("Files/.wh..wh..opq", b"")], "is not below Files/ or is an opaque directory"),
    ([entry("Hives/"), entry("Hives/.wh.Software_Delta", b"")], "is not below Files/ or is an opaque directory"),
    ([entry("Files/"), symlink("Files/etc", "/etc"), entry("Files/etc/evil", b"x")], "is a symbolic link"),
])
def test_a_windows_layer_that_is_not_one_is_refused(tmp_path, entries, said):
    import gzip

    from nspawn.images import winlayer

    with pytest.raises(winlayer.LayerError) as e:
        winlayer.expand(io.BytesIO(gzip.decompress(tar_bytes(entries))), str(tmp_path), "sha256:test")
    assert said in str(e.value)
    assert not (tmp_path.parent / "escaped").exists() and not os.path.exists("/etc/evil")
