"""References as Docker spells them, and the platform choice of an index: pure."""

import json

import pytest

from nspawn.images.manifest import ManifestError, Platform, choose, parse_manifest
from nspawn.images.reference import ReferenceError, is_loopback, parse

HEX = "a" * 64


@pytest.mark.parametrize("text, registry, repository, tag, digest", [
    ("alpine", "docker.io", "library/alpine", "latest", None),
    ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
    ("library/alpine", "docker.io", "library/alpine", "latest", None),
    ("bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
    ("docker.io/alpine", "docker.io", "library/alpine", "latest", None),
    ("index.docker.io/alpine", "docker.io", "library/alpine", "latest", None),
    ("ghcr.io/owner/name:v1.2", "ghcr.io", "owner/name", "v1.2", None),
    ("quay.io/a/b/c", "quay.io", "a/b/c", "latest", None),
    ("localhost/x", "localhost", "x", "latest", None),
    ("localhost:5000/x:t", "localhost:5000", "x", "t", None),
    ("127.0.0.1:5000/x/y", "127.0.0.1:5000", "x/y", "latest", None),
    ("[::1]:5000/x", "[::1]:5000", "x", "latest", None),
    (f"alpine@sha256:{HEX}", "docker.io", "library/alpine", None, f"sha256:{HEX}"),
    (f"alpine:3@sha256:{HEX}", "docker.io", "library/alpine", "3", f"sha256:{HEX}"),
    ("my_name/a.b-c__d:T_1.x-y", "docker.io", "my_name/a.b-c__d", "T_1.x-y", None),
])
def test_docker_spelling_and_defaults(text, registry, repository, tag, digest):
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert ref.wanted == (digest or tag)
    assert parse(str(ref)) == ref  # the canonical spelling reads back the same


def test_docker_hub_api_host():
    assert parse("alpine").api_host == "registry-1.docker.io"
    assert parse("ghcr.io/a/b").api_host == "ghcr.io"


@pytest.mark.parametrize("text, says", [
    ("", "expected a reference"),
    ("Alpine", "must be lowercase"),
    ("alpine:", "the tag ''"),
    ("alpine:-x", "the tag '-x'"),
    ("alpine@sha256:abc", "the digest"),
    (f"alpine@md5:{HEX}", "the digest"),
    ("a//b", "not a valid name component"),
    ("a/b_", "not a valid name component"),
    (" alpine", "expected a reference"),
    ("x" * 256, "longer than 255"),
    ("a.b:99999999/x", "the registry 'a.b:99999999'"),
    ("bad_host.com/x", "the registry 'bad_host.com'"),
    ("a.b:/x", "the registry 'a.b:'"),
    ("a--b/c-", "not a valid name component"),
])
def test_refused_with_what_is_wrong(text, says):
    with pytest.raises(ReferenceError, match=None) as e:
        parse(text)
    assert says in str(e.value)


def test_loopback():
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:80")
    assert not is_loopback("registry.example:5000") and not is_loopback("docker.io")


def _index(*platforms):
    return json.dumps({"schemaVersion": 2, "manifests": [
        {"digest": f"sha256:{str(i) * 64}", "size": 10, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "platform": p} for i, p in enumerate(platforms)]}).encode()


def test_platform_by_os_architecture_and_variant():
    index = _index({"os": "linux", "architecture": "arm", "variant": "v6"},
                   {"os": "linux", "architecture": "arm", "variant": "v7"},
                   {"os": "linux", "architecture": "amd64"},
                   {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1"})
    assert choose(index, Platform("linux", "arm", "v7"))[0].digest == "sha256:" + "1" * 64
    assert choose(index, Platform("linux", "amd64"))[0].digest == "sha256:" + "2" * 64
    with pytest.raises(ManifestError, match="no linux/s390x entry; it offers linux/arm/v6, .*windows/amd64 \\(10.0.17763.1\\)"):
        choose(index, Platform("linux", "s390x"))


def test_windows_by_host_build_latest_revision_and_mismatch_refused():
    index = _index({"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.5"},
                   {"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.100"},
                   {"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.2113"})
    assert choose(index, Platform("windows", "amd64", "", "10.0.20348"))[0].digest == "sha256:" + "2" * 64
    assert choose(index, Platform("windows", "amd64", "", "10.0.17763"))[0].digest == "sha256:" + "0" * 64
    with pytest.raises(ManifestError, match="OS version 10.0.17763.5, 10.0.20348.100, 10.0.20348.2113, and this host is build 26100"):
        choose(index, Platform("windows", "amd64", "", "10.0.26100"))


def test_manifest_layers_and_refusals():
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{HEX}", "size": 3}
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{HEX}", "size": 2}
    manifest = parse_manifest(json.dumps({"schemaVersion": 2, "config": config, "layers": [layer]}).encode())
    assert manifest.layers[0].compression == "gzip" and manifest.layers[0].size == 3
    with pytest.raises(ManifestError, match="schema 1 is not supported"):
        parse_manifest(json.dumps({"schemaVersion": 1}).encode())
    with pytest.raises(ManifestError, match="media type 'application/x-other'"):
        parse_manifest(json.dumps({"schemaVersion": 2, "config": config,
                                   "layers": [{**layer, "mediaType": "application/x-other"}]}).encode())
    with pytest.raises(ManifestError, match="no sha256 digest"):
        parse_manifest(json.dumps({"schemaVersion": 2, "config": {**config, "digest": "sha512:ab"}}).encode())


def test_an_image_config_without_env_or_cmd_has_empty_defaults():
    from nspawn.images.manifest import parse_config

    config = parse_config(json.dumps({"os": "linux", "architecture": "amd64", "config": {},
                                      "rootfs": {"diff_ids": [f"sha256:{HEX}"]}}).encode())
    assert (config.env, config.cmd, config.entrypoint, config.working_dir, config.user) == ((), (), (), "", "")
    with pytest.raises(ManifestError, match="Env is not a list of strings"):
        parse_config(json.dumps({"config": {"Env": "A=1"}}).encode())
