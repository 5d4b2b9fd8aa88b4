"""Images already on this host, used by reference without pulling: Docker's overlay2 store
and Podman's containers-storage (overlay driver). Read only; their layers are used in place.

Docker: image/overlay2/repositories.json (familiar name → image id) → the image config in
imagedb → its diff_ids → chain ids → layerdb/sha256/<chain id>/cache-id → overlay2/<cache id>/diff.
Podman: overlay-images/images.json (full names → image, top layer id, config) →
overlay-layers/layers.json (each layer's parent) → overlay/<layer id>/diff.
Docker on Windows: the same under image/windowsfilter, the layer being windowsfilter/<cache id>
(whose layerchain.json names the layers below it), used as the HCS backend's parent layer.
Docker's and Podman's Linux stores keep a short link per layer (the layer directory's `link` file names it in l/), which the
mount uses so that many layers fit its options.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys

from nspawn.images.reference import DOCKER_HUB, Reference

DOCKER_ROOT = "/var/lib/docker"
PODMAN_ROOT = "/var/lib/containers/storage"


WINDOWS_DOCKER_ROOT = "C:\\ProgramData\\docker"


def docker_root() -> str:
    return os.environ.get("NSPAWN_DOCKER_ROOT") or (WINDOWS_DOCKER_ROOT if sys.platform == "win32" else DOCKER_ROOT)


def podman_root() -> str:
    return os.environ.get("NSPAWN_PODMAN_ROOT") or PODMAN_ROOT


def familiar(ref: Reference) -> str:
    """The name as Docker's repositories.json keys it: docker.io and library/ left out."""
    name = ref.name
    if ref.registry == DOCKER_HUB:
        name = ref.repository[len("library/"):] if ref.repository.startswith("library/") else ref.repository
    return name


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _short(layer_dir: str, diff: str) -> str:
    """The layer's short link (l/<name>) when its store keeps one, else its diff directory."""
    try:
        with open(os.path.join(layer_dir, "link"), encoding="utf-8") as f:
            name = f.read().strip()
    except OSError:
        return diff
    link = os.path.join(os.path.dirname(layer_dir), "l", name)
    return link if name and os.path.islink(link) else diff


def docker(ref: Reference, root: str | None = None, driver: str = "overlay2"):
    """(image id, layers' short links and diffs top first, image config) or None. With the
    windowsfilter driver a layer is its folder, which the HCS backend takes as it is."""
    root = root or docker_root()
    base = os.path.join(root, "image", driver)
    repositories = (_read_json(os.path.join(base, "repositories.json")) or {}).get("Repositories") or {}
    name = familiar(ref)
    keys = [f"{name}@{ref.digest}"] if ref.digest else [f"{name}:{ref.tag}"]
    image_id = next((repositories.get(name, {}).get(k) for k in keys if repositories.get(name, {}).get(k)), None)
    if not image_id or not image_id.startswith("sha256:"):
        return None
    config = _read_json(os.path.join(base, "imagedb", "content", "sha256", image_id.split(":", 1)[1]))
    if not isinstance(config, dict):
        return None
    chain, layers = None, []
    for diff_id in (config.get("rootfs") or {}).get("diff_ids") or ():
        chain = diff_id if chain is None else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
        try:
            with open(os.path.join(base, "layerdb", "sha256", chain.split(":", 1)[1], "cache-id"), encoding="utf-8") as f:
                cache_id = f.read().strip()
        except OSError:
            return None
        layer_dir = os.path.join(root, driver, cache_id)
        diff = os.path.join(layer_dir, "diff") if driver == "overlay2" else layer_dir
        if not os.path.isdir(diff):
            return None
        layers.append((diff_id, _short(layer_dir, diff) if driver == "overlay2" else diff, diff))
    return image_id, layers[::-1], config


def podman(ref: Reference, root: str | None = None):
    """(image id, layers' short links and diffs top first, image config) or None."""
    root = root or podman_root()
    images = _read_json(os.path.join(root, "overlay-images", "images.json")) or []
    wanted = str(ref)
    image = next((i for i in images if isinstance(i, dict) and (wanted in (i.get("names") or ())
                  or (ref.digest and ref.digest in (i.get("digests") or [i.get("digest")])))), None)
    if image is None:
        return None
    by_id = {layer.get("id"): layer for layer in _read_json(os.path.join(root, "overlay-layers", "layers.json")) or ()
             if isinstance(layer, dict)}
    config_key = "sha256:" + image["id"]
    config_file = "=" + base64.b64encode(config_key.encode()).decode()
    config = _read_json(os.path.join(root, "overlay-images", image["id"], config_file))
    if not isinstance(config, dict):
        return None
    layers, layer_id = [], image.get("layer")
    while layer_id:
        layer = by_id.get(layer_id)
        layer_dir = os.path.join(root, "overlay", layer_id)
        diff = os.path.join(layer_dir, "diff")
        if layer is None or not os.path.isdir(diff):
            return None
        layers.append((layer.get("diff-digest") or layer_id, _short(layer_dir, diff), diff))
        layer_id = layer.get("parent")
    return config_key, layers, config


def find(ref: Reference):
    """(store name, image id, layers top first, image config) from the first host store that
    has the reference, or None."""
    for store, finder in (("docker", docker), ("podman", podman)):
        found = finder(ref)
        if found is not None:
            return (store, *found)
    return None
