"""What `nspawn images`, `rmi` and `prune` find and do in the store."""

from __future__ import annotations

import os

from nspawn.images.store import Store
from nspawn.records import record


@record
class Listed:
    reference: str
    digest: str
    size: int  # bytes unpacked, all layers
    pulled: float | None
    last_used: float | None
    platform: str

    def to_json(self) -> dict:
        return self._asdict()


def listed(store: Store | None = None) -> list[Listed]:
    store = store or Store()
    rows = []
    for reference, digest in sorted(store.refs().items()):
        image = store.image(digest)
        if image is None:
            continue
        size = 0
        for layer in image["layers"]:
            try:
                size += store.layer_info(layer["digest"]).get("unpacked", 0)
            except (OSError, ValueError):
                pass
        rows.append(Listed(reference, digest, size, image.get("pulled"), store.last_used(digest), image.get("platform", "")))
    return rows


def remove(references: list, store: Store | None = None) -> tuple[list[str], list[str]]:
    """Untag each reference; an image no reference names any more goes (its layers stay for
    prune). Returns (lines said, references not found)."""
    from nspawn.images.reference import parse

    store = store or Store()
    said, missing = [], []
    for text in references:
        name = str(parse(text))
        refs = store.refs()
        digest = refs.get(name)
        if digest is None or not store.untag(name):
            missing.append(text)
            continue
        said.append(f"untagged {name}")
        if digest not in store.refs().values():
            store.remove_image(digest)
            said.append(f"deleted {digest}")
    return said, missing


def in_use() -> set:
    """Layer digests that containers nspawn runs (or killed launchers left) use, from their journals."""
    from nspawn.journal import read_journals

    used = set()
    for journal in read_journals():
        image = journal.header.get("image")
        if isinstance(image, dict):
            used.update(image.get("layers") or ())
    return used


def prune(store: Store | None = None) -> tuple[list[str], int]:
    """Remove the layers no image in the store names and no container uses, and what dead
    pulls left; returns (lines said, bytes freed)."""
    store = store or Store()
    if not os.path.isdir(store.path("layers")):
        return [], 0
    said, freed = [], 0
    with store.lock("store"):
        named = {layer["digest"] for image in store.images() for layer in image["layers"]}
        busy = in_use()
        for name in store.sweep_tmp():
            said.append(f"removed the leftovers of a pull that died ({name})")
        for digest in sorted(store.layers()):
            if digest in named:
                continue
            if digest in busy:
                said.append(f"kept {digest}: a container uses it")
                continue
            try:
                freed += store.layer_info(digest).get("unpacked", 0)
            except (OSError, ValueError):
                pass
            store.remove_layer(digest)
            said.append(f"deleted {digest}")
        doomed = [d for d in sorted(store.windows_layers()) if d not in named]
        if doomed:
            from nspawn.images.winlayer import enable_privileges

            enable_privileges()
        for digest in doomed:
            if digest in busy:
                said.append(f"kept {digest}: a container uses it")
                continue
            store.remove_windows_layer(digest)
            said.append(f"deleted {digest}")
    return said, freed
