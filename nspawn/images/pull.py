"""A pull: reference → manifest (through an index by platform) → config → layers into the store,
every blob's size and digest checked before anything is unpacked from it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

from nspawn.images import manifest as manifests
from nspawn.images.reference import Reference
from nspawn.images.registry import INDEXES, MANIFESTS, RegistryError
from nspawn.images.store import Store, hex_of
from nspawn.images.unpack import LayerError, unpack

CHUNK = 1 << 20


class Progress:
    """What a pull reports as it goes; this one reports nothing."""

    def layer(self, digest: str, size: int) -> None:
        pass

    def advance(self, digest: str, amount: int) -> None:
        pass

    def done(self, digest: str, how: str) -> None:
        """how: "pulled" or "already present"."""


class _Hashing:
    """A file object that hashes what is read through it (a layer's uncompressed digest)."""

    def __init__(self, raw):
        self.raw, self.sha = raw, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha.update(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def _download(registry, ref: Reference, blob, path: str, progress: Progress) -> None:
    """The blob into `path`, its size and digest checked."""
    sha, count = hashlib.sha256(), 0
    with _open_blob(registry, ref, blob) as response, open(path, "wb") as out:
        read = getattr(response, "read1", response.read)  # what has arrived: progress as it comes
        while True:
            chunk = read(CHUNK)
            if not chunk:
                break
            count += len(chunk)
            if count > blob.size:
                raise RegistryError(f"{ref.name}: blob {blob.digest} is larger than the {blob.size} bytes its manifest says; refusing it")
            sha.update(chunk)
            out.write(chunk)
            progress.advance(blob.digest, len(chunk))
    if count != blob.size:
        raise RegistryError(f"{ref.name}: blob {blob.digest} has {count} bytes, and its manifest says {blob.size}; refusing it")
    if "sha256:" + sha.hexdigest() != blob.digest:
        raise RegistryError(f"{ref.name}: blob {blob.digest} has the digest sha256:{sha.hexdigest()}; refusing it "
                            "(tampered with or damaged)")


def _open_blob(registry, ref: Reference, blob):
    """A foreign layer from its own URLs (HTTPS only), else from the registry."""
    for url in blob.urls:
        if url.startswith("https://"):
            import urllib.request

            try:
                return urllib.request.urlopen(url, timeout=60)
            except OSError:
                continue
    return registry.blob(ref, blob.digest)


def _small_blob(registry, ref: Reference, blob) -> bytes:
    with registry.blob(ref, blob.digest) as response:
        body = response.read(blob.size + 1)
    if len(body) != blob.size or "sha256:" + hashlib.sha256(body).hexdigest() != blob.digest:
        raise RegistryError(f"{ref.name}: blob {blob.digest} does not have the size and digest its manifest says; refusing it")
    return body


def _decompressed(path: str, compression: str, layer: str):
    raw = open(path, "rb")
    if compression == manifests.GZIP:
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == manifests.ZSTD:
        try:
            import zstandard  # an extra: nspawn[zstd]
        except ImportError:
            raw.close()
            raise LayerError(f"layer {layer} is zstd-compressed, and the zstandard package is not installed; "
                             "expected it (pip install 'nspawn[zstd]'), or a gzip or uncompressed layer") from None
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
    return raw


def _expanded(compressed: str, blob, diff_id: str, into: str, expand) -> tuple:
    """expand(stream, into, digest) over the downloaded blob, its uncompressed digest checked
    against the image config's diff_id; (what expand returns, that digest)."""
    stream = _decompressed(compressed, blob.compression, blob.digest)
    hashing = _Hashing(stream)
    try:
        written = expand(hashing, into, blob.digest)
        hashing.drain()
    except (EOFError, OSError) as e:
        if isinstance(e, LayerError):
            raise
        raise LayerError(f"layer {blob.digest} is not a readable tar archive: {e}") from None
    finally:
        stream.close()
    got = "sha256:" + hashing.sha.hexdigest()
    if diff_id and got != diff_id:
        raise LayerError(f"layer {blob.digest} unpacks to {got}, and the image config says {diff_id}; refusing it")
    return written, got


def ensure_layer(store: Store, registry, ref: Reference, blob, diff_id: str, progress: Progress) -> str:
    """The layer in the store, made once however many pulls want it at the same time."""
    progress.layer(blob.digest, blob.size)
    with store.lock(hex_of(blob.digest)):
        if store.has_layer(blob.digest):
            store.ensure_link(blob.digest)
            progress.done(blob.digest, "already present")
            return "already present"
        work = store.temporary()
        try:
            compressed = os.path.join(work, "blob")
            _download(registry, ref, blob, compressed, progress)
            made = os.path.join(work, "layer")
            os.makedirs(os.path.join(made, "diff"))
            os.chmod(os.path.join(made, "diff"), 0o755)
            written, got = _expanded(compressed, blob, diff_id, os.path.join(made, "diff"), unpack)
            os.unlink(compressed)
            with open(os.path.join(made, "layer.json"), "w", encoding="utf-8") as f:
                json.dump({"digest": blob.digest, "diff_id": got, "size": blob.size, "unpacked": written}, f)
            store.add_layer(blob.digest, made)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    progress.done(blob.digest, "pulled")
    return "pulled"


def ensure_windows_layer(store: Store, registry, ref: Reference, blob, diff_id: str, parents: list,
                         progress: Progress, privileges: list) -> str:
    """The Windows layer imported into the store's windowsfilter form over `parents` (digests,
    top-most first), once however many pulls want it. `privileges` is the pull's one-item
    memo of whether the backup privileges are enabled yet: asked for only by an import."""
    from nspawn.images import winlayer

    progress.layer(blob.digest, blob.size)
    with store.lock(hex_of(blob.digest)):
        if store.has_windows_layer(blob.digest):
            progress.done(blob.digest, "already present")
            return "already present"
        if not privileges:
            winlayer.enable_privileges()
            privileges.append(True)
        work = store.temporary()
        try:
            compressed = os.path.join(work, "blob")
            _download(registry, ref, blob, compressed, progress)
            source = os.path.join(work, "source")
            os.mkdir(source)
            _expanded(compressed, blob, diff_id, source, winlayer.expand)
            os.unlink(compressed)
            winlayer.import_layer(store, blob.digest, source, parents, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    progress.done(blob.digest, "pulled")
    return "pulled"


def resolve(registry, ref: Reference, platform: manifests.Platform):
    """(manifest digest, manifest body, index digest or None, chosen platform) of a reference."""
    body, media_type, digest = registry.manifest(ref, ref.wanted)
    index_digest = None
    if media_type in INDEXES:
        index_digest = digest
        entry, chosen = manifests.choose(body, platform)
        body, media_type, digest = registry.manifest(ref, entry.digest, MANIFESTS)
        if digest != entry.digest:
            raise RegistryError(f"{ref.name}: the manifest {entry.digest} came back as {digest}; refusing it")
    if media_type not in MANIFESTS:
        raise RegistryError(f"{ref}: the registry sent a {media_type or 'manifest without a media type'}; expected an "
                            "OCI or Docker schema 2 manifest or index")
    return digest, body, index_digest


def pull(ref: Reference, store: Store, *, registry=None, platform: manifests.Platform | None = None,
         progress: Progress | None = None) -> dict:
    """Pull `ref` into the store (only what it does not hold yet); returns the image record."""
    from nspawn.images.registry import Registry

    registry = registry or Registry(ref.registry)
    progress = progress or Progress()
    host = manifests.host_platform()
    platform = platform or host
    if platform.os == "windows" and host.os != "windows":
        from nspawn.backends.hcs.native.loader import simulated

        if simulated():
            # The simulated HCS stands in for Windows: its build is the host's.
            from nspawn.backends.hcs.native.kernel32 import windows_build

            host = manifests.Platform("windows", host.architecture, host.variant, f"10.0.{windows_build()}")
    if platform.os == "windows" and not platform.os_version and host.os == "windows":
        platform = platform._replace(os_version=host.os_version)  # the image for this host's build
    if platform.os != host.os:
        raise manifests.ManifestError(f"found the platform {platform}; this host runs {host.os} containers, and "
                                      f"{platform.os} images are unpacked only on {platform.os}")
    store.prepare()
    # Shared with other pulls, exclusive of prune: a layer made for an image whose record is
    # not written yet belongs to no image, and prune must not take it.
    with store.lock("store", shared=True):
        store.sweep_tmp()
        return _pull(ref, store, registry, platform, progress)


def _pull(ref: Reference, store: Store, registry, platform, progress: Progress) -> dict:
    digest, body, index_digest = resolve(registry, ref, platform)
    manifest = manifests.parse_manifest(body)
    config_body = _small_blob(registry, ref, manifest.config)
    config = manifests.parse_config(config_body)
    if config.platform.os and config.platform.os != platform.os:
        raise manifests.ManifestError(f"{ref} is a {config.platform} image; this host runs {platform.os} containers")
    if config.diff_ids and len(config.diff_ids) != len(manifest.layers):
        raise manifests.ManifestError(f"{ref}: the manifest has {len(manifest.layers)} layers and its config "
                                      f"{len(config.diff_ids)}; expected the same number")
    windows, privileges = platform.os == "windows", []
    if windows:
        os.makedirs(store.path("windowsfilter"), mode=0o700, exist_ok=True)
    for i, blob in enumerate(manifest.layers):
        diff_id = config.diff_ids[i] if config.diff_ids else ""
        if windows:
            parents = [b.digest for b in reversed(manifest.layers[:i])]
            ensure_windows_layer(store, registry, ref, blob, diff_id, parents, progress, privileges)
        else:
            ensure_layer(store, registry, ref, blob, diff_id, progress)
    record = image_record(str(ref), digest, index_digest, manifest, config)
    store.put_image(record)
    store.tag(str(ref), digest)
    if index_digest:
        store.tag(f"{ref.name}@{index_digest}", digest)
    return record


def image_record(reference: str, digest: str, index_digest: str | None, manifest, config) -> dict:
    return {"digest": digest, "index_digest": index_digest, "reference": reference,
            "config_digest": manifest.config.digest, "platform": str(config.platform),
            "layers": [{"digest": b.digest, "size": b.size} for b in manifest.layers],
            "size": sum(b.size for b in manifest.layers), "config": config.to_json(), "pulled": time.time()}
