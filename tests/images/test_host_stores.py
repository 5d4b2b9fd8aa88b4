"""Images from Docker's overlay2 store and Podman's containers-storage, laid out on disk by the
test as those tools lay them out, run by reference without a registry, as root."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

import pytest

from tests.conftest import nspawn
from tests.images.conftest import host_binaries_root
from tests.linux.conftest import needs_root

pytestmark = needs_root

IMAGE_CONFIG = {"os": "linux", "architecture": "amd64",
                "config": {"Env": ["PATH=/bin", "GREETING=from the host store"], "WorkingDir": "/etc",
                           "Cmd": ["/bin/sh", "-c", "echo \"$GREETING\"; pwd; cat added; test -e deleted || echo gone"]}}


def _layers(root: str, names: list) -> None:
    """Two layers in overlay's form at root/<name>/diff: a base, then one deleting a file and adding one."""
    base, top = (os.path.join(root, name, "diff") for name in names)
    host_binaries_root(base)
    os.makedirs(base + "/etc")
    for name in ("kept", "deleted"):
        with open(f"{base}/etc/{name}", "w") as f:
            f.write(name + "\n")
    os.makedirs(top + "/etc")
    with open(top + "/etc/added", "w") as f:
        f.write("added\n")
    os.mknod(top + "/etc/deleted", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    os.makedirs(os.path.join(root, "l"), exist_ok=True)
    for i, name in enumerate(names):
        short = f"SHORT{i}XXXXXXXXXXXXXXXXXXXX"
        with open(os.path.join(root, name, "link"), "w") as f:
            f.write(short)
        os.symlink(f"../{name}/diff", os.path.join(root, "l", short))


def _write(path: str, data) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))


def docker_store(root: str, name_key: str, tag_key: str) -> str:
    diff_ids = ["sha256:" + hashlib.sha256(n).hexdigest() for n in (b"base", b"top")]
    config = json.dumps({**IMAGE_CONFIG, "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    image_id = hashlib.sha256(config.encode()).hexdigest()
    base = os.path.join(root, "image", "overlay2")
    _write(os.path.join(base, "imagedb", "content", "sha256", image_id), config)
    _write(os.path.join(base, "repositories.json"), {"Repositories": {name_key: {tag_key: "sha256:" + image_id}}})
    cache_ids = ["c" * 64, "d" * 64]
    chain = None
    for diff_id, cache_id in zip(diff_ids, cache_ids):
        chain = diff_id if chain is None else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
        _write(os.path.join(base, "layerdb", "sha256", chain.split(":")[1], "cache-id"), cache_id)
    _layers(os.path.join(root, "overlay2"), cache_ids)
    return "sha256:" + image_id


def podman_store(root: str, name: str) -> str:
    image_id = "e" * 64
    layer_ids = ["a" * 64, "b" * 64]
    _write(os.path.join(root, "overlay-images", "images.json"),
           [{"id": image_id, "names": [name], "layer": layer_ids[1]}])
    key = "=" + base64.b64encode(f"sha256:{image_id}".encode()).decode()
    _write(os.path.join(root, "overlay-images", image_id, key), {**IMAGE_CONFIG, "rootfs": {"type": "layers"}})
    _write(os.path.join(root, "overlay-layers", "layers.json"),
           [{"id": layer_ids[0]}, {"id": layer_ids[1], "parent": layer_ids[0]}])
    _layers(os.path.join(root, "overlay"), layer_ids)
    return "sha256:" + image_id


EXPECTED = ["from the host store", "/etc", "added", "gone"]


@pytest.mark.parametrize("reference, name_key, tag_key", [
    ("alpine", "alpine", "alpine:latest"),
    ("registry.example:5000/team/app:1", "registry.example:5000/team/app", "registry.example:5000/team/app:1"),
])
def test_an_image_of_dockers_overlay2_store(tmp_path, store, monkeypatch, reference, name_key, tag_key):
    root = str(tmp_path / "docker")
    image_id = docker_store(root, name_key, tag_key)
    monkeypatch.setenv("NSPAWN_DOCKER_ROOT", root)
    monkeypatch.setenv("NSPAWN_PODMAN_ROOT", str(tmp_path / "no-podman"))
    ran = nspawn("run", "--image", reference)
    assert (ran.returncode, ran.stdout.splitlines()) == (0, EXPECTED), ran.stderr
    assert "pulling" not in ran.stderr
    plan = json.loads(nspawn("run", "--dry-run", "--image", reference).stdout)
    assert plan["image"]["digest"] == image_id and plan["image"]["platform"] == "linux/amd64 (docker store)"
    assert plan["lower_layers"] == [f"{root}/overlay2/l/SHORT1XXXXXXXXXXXXXXXXXXXX",
                                    f"{root}/overlay2/l/SHORT0XXXXXXXXXXXXXXXXXXXX"]
    assert not os.path.exists(os.path.join(store, "images"))  # nothing pulled, nothing copied


def test_an_image_of_podmans_containers_storage(tmp_path, store, monkeypatch):
    root = str(tmp_path / "podman")
    image_id = podman_store(root, "quay.io/team/tool:2")
    monkeypatch.setenv("NSPAWN_DOCKER_ROOT", str(tmp_path / "no-docker"))
    monkeypatch.setenv("NSPAWN_PODMAN_ROOT", root)
    ran = nspawn("run", "--image", "quay.io/team/tool:2")
    assert (ran.returncode, ran.stdout.splitlines()) == (0, EXPECTED), ran.stderr
    plan = json.loads(nspawn("run", "--dry-run", "--image", "quay.io/team/tool:2").stdout)
    assert plan["image"]["digest"] == image_id and [layer["path"] for layer in plan["image"]["layers"]] == [
        f"{root}/overlay/{'b' * 64}/diff", f"{root}/overlay/{'a' * 64}/diff"]
    missing = json.loads(nspawn("run", "--dry-run", "--image", "quay.io/team/tool:3").stdout)
    assert missing["image"]["digest"] == "<at run time>"  # not Podman's 2, which it does not confuse with 3
