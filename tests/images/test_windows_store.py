"""An image of Docker's windowsfilter store run by reference through the simulated HCS: its top
layer is the parent layer, whose layerchain.json names the rest; the image's Env, WorkingDir
and Cmd are the defaults."""

from __future__ import annotations

import hashlib
import json

import pytest

from nspawn.images.manifest import ManifestError, Platform, choose
from tests.hcs.conftest import Host
from tests.hcs_sim.fixtures import sim_library  # noqa: F401 (fixture)

REF = "mcr.microsoft.com/windows/nanoserver:ltsc2022"


def windowsfilter_store(root, job) -> tuple[str, list]:
    """Docker's windowsfilter layout of a two-layer image; (image id, layer folders top first)."""
    diff_ids = ["sha256:" + hashlib.sha256(n).hexdigest() for n in (b"base", b"update")]
    config = json.dumps({"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.2113",
                         "config": {"Env": ["Path=C:\\Windows", "GREETING=from windowsfilter"],
                                    "WorkingDir": "C:\\job", "Cmd": ["show.sh", "one"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    image_id = hashlib.sha256(config.encode()).hexdigest()
    base = root / "image" / "windowsfilter"
    (base / "imagedb" / "content" / "sha256").mkdir(parents=True)
    (base / "imagedb" / "content" / "sha256" / image_id).write_text(config)
    (base / "repositories.json").write_text(json.dumps(
        {"Repositories": {REF.split(":")[0]: {REF: "sha256:" + image_id}}}))
    folders, chain = [], None
    for diff_id, cache_id in zip(diff_ids, ("1" * 64, "2" * 64)):
        chain = diff_id if chain is None else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
        (base / "layerdb" / "sha256" / chain.split(":")[1]).mkdir(parents=True)
        (base / "layerdb" / "sha256" / chain.split(":")[1] / "cache-id").write_text(cache_id)
        folder = root / "windowsfilter" / cache_id
        (folder / "UtilityVM").mkdir(parents=True)
        if folders:
            (folder / "layerchain.json").write_text(json.dumps([str(f) for f in folders[::-1]]))
        folders.append(folder)
    return "sha256:" + image_id, [str(f) for f in folders[::-1]]


@pytest.fixture
def host(sim_library, tmp_path, monkeypatch):  # noqa: F811 (the fixture imported above)
    machine = Host(sim_library, tmp_path)
    monkeypatch.setenv("NSPAWN_DOCKER_ROOT", str(tmp_path / "docker"))
    monkeypatch.setenv("NSPAWN_STORE", str(tmp_path / "store"))
    return machine


def test_a_windowsfilter_image_is_the_parent_layer_and_gives_the_defaults(host, tmp_path):
    image_id, folders = windowsfilter_store(tmp_path / "docker", host.job)
    host.script("show.sh", 'echo "$GREETING" "$@"; pwd\n')
    document = {"backend": "hcs", "image": REF, "process_directory": str(host.job), "mapped_directory": "C:\\job"}
    config = tmp_path / "image.json"
    config.write_text(json.dumps(document))
    from tests.conftest import nspawn

    plan = json.loads(nspawn("run", "--dry-run", "-c", str(config), env=host.env(None)).stdout)
    assert plan["layers"]["parent"] == folders[0] and plan["layers"]["chain"] == folders
    ran = nspawn("run", "-c", str(config), env=host.env(None))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["from windowsfilter one", str(host.job)]
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({**document, "image": REF.replace("ltsc2022", "ltsc2019")}))
    refused = nspawn("run", "-c", str(missing), env=host.env(None))
    assert refused.returncode == 2
    assert "nor in Docker's windowsfilter store" in refused.stderr and "docker pull" in refused.stderr


def test_a_windows_build_mismatch_is_said_in_words():
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"digest": "sha256:" + "1" * 64, "size": 1, "platform": {"os": "windows", "architecture": "amd64",
                                                                 "os.version": "10.0.17763.5830"}}]}).encode()
    with pytest.raises(ManifestError) as e:
        choose(index, Platform("windows", "amd64", "", "10.0.20348"))
    assert str(e.value) == (
        "the image is for Windows OS version 10.0.17763.5830, and this host is build 20348: a process-isolated "
        "container runs only on the build its image was made for; expected an image tag for this host's Windows "
        "version (e.g. ltsc2022 for build 20348), or isolation hyperv")


def test_a_dry_run_of_a_windows_image_docker_lacks_shows_placeholders(host, tmp_path):
    from tests.conftest import nspawn

    config = tmp_path / "absent.json"
    config.write_text(json.dumps({"backend": "hcs", "image": REF}))
    done = nspawn("run", "--dry-run", "-c", str(config), env=host.env(None))
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["layers"]["parent"] == str(tmp_path / "docker" / "windowsfilter" / "<its top layer <at run time>>")
    assert plan["v2"]["process"]["CommandLine"] == "\"<the image's Entrypoint and Cmd>\""
