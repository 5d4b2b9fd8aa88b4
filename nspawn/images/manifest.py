"""OCI and Docker schema 2 manifests and indexes, and the platform choice. Pure."""

from __future__ import annotations

import json
import os
import sys

from nspawn.errors import NspawnError
from nspawn.images.reference import digest_ok
from nspawn.records import record

GZIP, ZSTD, PLAIN = "gzip", "zstd", "tar"
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": PLAIN,
    "application/vnd.oci.image.layer.v1.tar+gzip": GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd": ZSTD,
    "application/vnd.oci.image.layer.nondistributable.v1.tar": PLAIN,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": PLAIN,
}
_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": ("arm", "v7"),
             "armv6l": ("arm", "v6"), "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
             "riscv64": "riscv64"}


class ManifestError(NspawnError):
    """A manifest, index, image config or platform that cannot be used; the message says why."""


@record
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""  # Windows: 10.0.<build>.<revision>

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")
        return text + (f" ({self.os_version})" if self.os_version else "")


@record
class Blob:
    digest: str
    size: int
    media_type: str
    urls: tuple = ()  # a foreign layer's own places

    @property
    def compression(self) -> str:
        return LAYER_TYPES[self.media_type]


@record
class Manifest:
    config: Blob
    layers: tuple  # of Blob, bottom first


def host_platform() -> Platform:
    """This host's platform as images name it."""
    machine = os.uname().machine.lower() if hasattr(os, "uname") else _windows_machine()
    arch = _MACHINES.get(machine, machine)
    variant = ""
    if isinstance(arch, tuple):
        arch, variant = arch
    elif arch == "arm64":
        variant = "v8"
    if sys.platform == "win32":
        version = sys.getwindowsversion()
        return Platform("windows", arch, variant, f"10.0.{version.build}")
    return Platform("linux", arch, variant)


def _windows_machine() -> str:
    import platform  # only here: its import costs milliseconds

    return platform.machine()


def parse_platform(text: str) -> Platform:
    """`os/arch[/variant]`, as --platform takes it."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ManifestError(f"found the platform {text!r}; expected os/architecture[/variant], e.g. linux/amd64")
    return Platform(*parts)


def _json(body: bytes, what: str) -> dict:
    try:
        data = json.loads(body)
    except ValueError:
        raise ManifestError(f"{what} is not JSON") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return data


def _blob(item, what: str) -> Blob:
    if not isinstance(item, dict) or not isinstance(item.get("digest"), str) or not digest_ok(item["digest"]):
        raise ManifestError(f"{what} has no sha256 digest; expected one (other digest algorithms are not supported)")
    size = item.get("size")
    if not isinstance(size, int) or size < 0:
        raise ManifestError(f"{what} {item['digest']} has no size; expected a byte count")
    return Blob(item["digest"], size, str(item.get("mediaType", "")), tuple(item.get("urls") or ()))


def parse_manifest(body: bytes) -> Manifest:
    data = _json(body, "the manifest")
    if data.get("schemaVersion") != 2:
        raise ManifestError(f"the manifest has schemaVersion {data.get('schemaVersion')!r}; expected 2 (schema 1 is not supported)")
    config = _blob(data.get("config"), "the manifest's config")
    layers = tuple(_blob(item, f"layer {i + 1}") for i, item in enumerate(data.get("layers") or ()))
    for layer in layers:
        if layer.media_type not in LAYER_TYPES:
            raise ManifestError(f"layer {layer.digest} has the media type {layer.media_type!r}; expected a tar layer, "
                                "plain, gzip or zstd")
    return Manifest(config, layers)


def _windows_build(version: str) -> int | None:
    parts = version.split(".")
    return int(parts[2]) if len(parts) >= 3 and parts[2].isdigit() else None


def windows_mismatch(versions: list, host_build: int) -> str:
    """What the refusal of a Windows image built for another Windows says (HCS's own error,
    0xc0370101, says only "The operating system of the container does not match")."""
    shown = ", ".join(v or "unknown" for v in versions)
    return (f"the image is for Windows OS version {shown}, and this host is build {host_build}: a process-isolated "
            "container runs only on the build its image was made for; expected an image tag for this host's Windows "
            "version (e.g. ltsc2022 for build 20348), or isolation hyperv")


def windows_build_of(version: str) -> int | None:
    return _windows_build(version)


def choose(index_body: bytes, want: Platform) -> tuple[Blob, Platform]:
    """The index entry for `want`: same OS and architecture, the variant when both name one;
    on Windows, the same build as the host (a process-isolated container runs only on its own
    build), the latest revision of it."""
    data = _json(index_body, "the index")
    entries = []
    for i, item in enumerate(data.get("manifests") or ()):
        blob = _blob(item, f"index entry {i + 1}")
        p = item.get("platform") or {}
        entries.append((blob, Platform(str(p.get("os", "")), str(p.get("architecture", "")),
                                       str(p.get("variant", "")), str(p.get("os.version", "")))))
    fits = [(b, p) for b, p in entries if p.os == want.os and p.architecture == want.architecture
            and (not want.variant or not p.variant or p.variant == want.variant)]
    offered = ", ".join(str(p) for _, p in entries) or "nothing"
    if not fits:
        raise ManifestError(f"the image has no {want.os}/{want.architecture} entry; it offers {offered}")
    if want.os == "windows" and want.os_version:
        build = _windows_build(want.os_version)
        same = [(b, p) for b, p in fits if _windows_build(p.os_version) == build]
        if not same:
            raise ManifestError(windows_mismatch([p.os_version for _, p in fits], build))
        fits = sorted(same, key=lambda e: [int(x) if x.isdigit() else 0 for x in e[1].os_version.split(".")])[-1:]
    exact = [e for e in fits if e[1].variant == want.variant]
    return (exact or fits)[0]


@record
class ImageConfig:
    """What the image's config says about running it, and its layers' uncompressed digests."""

    platform: Platform
    env: tuple  # of "NAME=VALUE"
    working_dir: str
    entrypoint: tuple
    cmd: tuple
    user: str
    diff_ids: tuple

    def to_json(self) -> dict:
        return {"Env": list(self.env), "WorkingDir": self.working_dir, "Entrypoint": list(self.entrypoint),
                "Cmd": list(self.cmd), "User": self.user}


def parse_config(body: bytes) -> ImageConfig:
    data = _json(body, "the image config")
    run = data.get("config") or {}
    if not isinstance(run, dict):
        raise ManifestError("the image config's `config` is not an object")

    def strings(key: str) -> tuple:
        value = run.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ManifestError(f"the image config's {key} is not a list of strings")
        return tuple(value)

    rootfs = data.get("rootfs") or {}
    return ImageConfig(
        platform=Platform(str(data.get("os", "")), str(data.get("architecture", "")), str(data.get("variant", "")),
                          str(data.get("os.version", ""))),
        env=strings("Env"), working_dir=str(run.get("WorkingDir") or ""), entrypoint=strings("Entrypoint"),
        cmd=strings("Cmd"), user=str(run.get("User") or ""), diff_ids=tuple(rootfs.get("diff_ids") or ()))
