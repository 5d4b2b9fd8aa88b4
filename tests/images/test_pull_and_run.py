"""Images pulled from a real registry on loopback and run by reference, as root."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import nspawn
from tests.images.conftest import RegistryServer, add_manifest, entry_info, machine_arch, push_layout, set_index, tar_bytes
from tests.linux.conftest import needs_root

pytestmark = needs_root

CHECK = "test -e /etc/deleted && echo deleted-still-there; cat /etc/kept /etc/kept-link /etc/added; echo \"$GREETING\"; pwd"


def image_files(store: str) -> list[str]:
    """What the store holds that a run could use: image records and layers."""
    found = []
    for sub in ("images", "layers", "refs"):
        directory = os.path.join(store, sub)
        found += [f"{sub}/{n}" for n in os.listdir(directory)] if os.path.isdir(directory) else []
    return found


def built(layout: str) -> tuple[dict, list[bytes]]:
    """The test image's index entry (tag "t") and its layers' blobs, bottom first, to make
    other images from."""
    with open(os.path.join(layout, "index.json")) as f:
        entry = next(m for m in json.load(f)["manifests"]
                     if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "t")
    with open(os.path.join(layout, "blobs", "sha256", entry["digest"].split(":")[1])) as f:
        manifest = json.load(f)
    blobs = []
    for layer in manifest["layers"]:
        with open(os.path.join(layout, "blobs", "sha256", layer["digest"].split(":")[1]), "rb") as f:
            blobs.append(f.read())
    return entry, blobs


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_run_by_reference_pulls_then_runs_with_the_image_config(registry, test_image, store, fmt):
    ref = test_image.push(registry, f"run/{fmt}:1", fmt)
    first = nspawn("run", "--image", ref)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["hello from the image", "cwd=/data/work", "added in layer 2"]  # Entrypoint + Cmd
    assert f"{ref} is not in the store; pulling it" in first.stderr
    second = nspawn("run", "--image", ref, "-E", "GREETING=overridden", "--", "/bin/sh", "-c", CHECK)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["kept", "kept", "added in layer 2", "overridden", "/data/work"]
    assert "pulling" not in second.stderr


def test_a_second_run_needs_no_registry_and_dry_run_shows_digest_and_layers(tmp_path, test_image, store):
    server = RegistryServer(tmp_path / "own").start()
    try:
        ref = test_image.push(server, "alone/img:2", "oci")
        pulled = nspawn("pull", ref)
        assert pulled.returncode == 0, pulled.stderr
        digest = pulled.stdout.split()[-1]
    finally:
        server.stop()
    ran = nspawn("run", "--image", ref, "--", "/bin/cat", "/etc/added")
    assert (ran.returncode, ran.stdout) == (0, "added in layer 2\n"), ran.stderr
    mounts = nspawn("run", "--image", ref, "--", "/bin/cat", "/proc/self/mountinfo")
    root = next(line for line in mounts.stdout.splitlines() if line.split()[3:5] == ["/", "/"])
    assert " - overlay " in root and "volatile" in root  # the scratch upper layer is not synced (mounts._mount_overlay)
    plan = json.loads(nspawn("run", "--dry-run", "--image", ref).stdout)
    assert plan["image"]["digest"] == digest and plan["image"]["reference"] == ref
    assert len(plan["image"]["layers"]) == 2 and len(plan["lower_layers"]) == 2
    assert all(os.path.isdir(layer["path"]) for layer in plan["image"]["layers"])
    assert plan["argv"][0] == "/bin/sh" and plan["cwd"] == "/data/work"
    listed = [json.loads(line) for line in nspawn("images", "--json").stdout.splitlines()]
    assert [(row["reference"], row["digest"]) for row in listed] == [(ref, digest)]
    assert listed[0]["last_used"] is not None and listed[0]["size"] > 1000


def test_an_unknown_name_or_tag_is_bad_input(registry, test_image, store):
    test_image.push(registry, "known/img:1", "oci")
    for ref, says in ((f"{registry.host}/known/img:2", "manifest 2: not found (MANIFEST_UNKNOWN"),
                      (f"{registry.host}/unknown/img:1", "manifest 1: not found (MANIFEST_UNKNOWN")):
        pulled = nspawn("pull", ref)
        assert pulled.returncode == 2 and says in pulled.stderr, pulled.stderr
        ran = nspawn("run", "--image", ref)
        assert ran.returncode == 2 and says in ran.stderr, ran.stderr
    assert image_files(store) == []


def not_on_this_host(ref: str) -> bool:
    """Whether a dry run shows `ref` as an image the run will have to get (and validate --host refuses it)."""
    plan = nspawn("run", "--dry-run", "--image", ref)
    assert plan.returncode == 0, plan.stderr
    return json.loads(plan.stdout)["image"]["digest"] == "<at run time>"


def test_a_dry_run_of_an_image_not_on_the_host_shows_placeholders_and_validate_host_says_to_pull(
        registry, test_image, store, tmp_path):
    ref = test_image.push(registry, "dry/img:1", "oci")
    done = nspawn("run", "--dry-run", "--image", ref)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["image"]["digest"] == "<at run time>" and plan["image"]["reference"] == ref
    assert plan["lower_layers"] == [f"<the layers of {ref} <at run time>>"]
    assert plan["argv"] == ["<the image's Entrypoint and Cmd>"]
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"image": ref}))
    checked = nspawn("validate", "--host", str(config))
    assert checked.returncode == 2
    assert (f"is not in the image store {store}, nor in Docker's or Podman's; expected it pulled first "
            f"(nspawn pull {ref})") in checked.stderr
    assert image_files(store) == []  # neither pulled


def test_a_tampered_blob_is_refused_and_nothing_kept(tmp_path, test_image, store):
    server = RegistryServer(tmp_path / "own").start()
    try:
        ref = test_image.push(server, "tamper/img:1", "oci")
        manifest = json.loads(nspawn_manifest(server, "tamper/img", "1"))
        layer = manifest["layers"][-1]["digest"]
        path = server.blob_path(layer)
        data = bytearray(open(path, "rb").read())
        data[len(data) // 2] ^= 0xFF
        open(path, "wb").write(bytes(data))
        done = nspawn("pull", ref)
    finally:
        server.stop()
    assert done.returncode == 125
    assert f"blob {layer} has the digest sha256:" in done.stderr and "refusing it" in done.stderr
    assert not any(name.startswith("images/") or name.startswith("refs/") for name in image_files(store))
    assert f"layers/{layer.split(':')[1]}" not in image_files(store)


def nspawn_manifest(server, name, tag) -> str:
    import urllib.request

    req = urllib.request.Request(f"http://{server.host}/v2/{name}/manifests/{tag}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req) as r:
        return r.read().decode()


def _big_layer(ref_host, test_image, registry, name):
    ref = test_image.push(registry, name, "oci")
    manifest = json.loads(nspawn_manifest(registry, name.split(":")[0], name.split(":")[1]))
    return ref.replace(registry.host, ref_host), manifest["layers"][0]["digest"]


def test_a_pull_killed_mid_download_leaves_nothing_used_and_a_rerun_completes(proxy, registry, test_image, store):
    ref, layer = _big_layer(proxy.host, test_image, registry, "killed/img:1")
    proxy.stall[layer] = 100_000
    puller = subprocess.Popen([sys.executable, "-m", "nspawn", "pull", ref], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.monotonic() + 30
    partial = []
    while time.monotonic() < deadline and not partial:
        tmp = os.path.join(store, "tmp")
        partial = [os.path.join(tmp, d, "blob") for d in (os.listdir(tmp) if os.path.isdir(tmp) else ())
                   if os.path.exists(os.path.join(tmp, d, "blob")) and os.path.getsize(os.path.join(tmp, d, "blob")) > 0]
        time.sleep(0.05)
    assert partial, "the pull never started downloading"
    puller.send_signal(signal.SIGKILL)
    puller.wait()
    assert not any(n.startswith(("images/", "refs/", "layers/" + layer.split(":")[1])) for n in image_files(store))
    assert not_on_this_host(ref)
    proxy.stall.clear()
    again = nspawn("pull", ref)
    assert again.returncode == 0, again.stderr
    assert os.listdir(os.path.join(store, "tmp")) == []  # the dead pull's download was swept
    ran = nspawn("run", "--image", ref, "--", "/bin/cat", "/etc/kept")
    assert (ran.returncode, ran.stdout) == (0, "kept\n"), ran.stderr


def test_two_concurrent_pulls_unpack_each_layer_once(proxy, registry, test_image, store):
    ref, layer = _big_layer(proxy.host, test_image, registry, "twice/img:1")
    proxy.stall[layer] = 100_000  # the first pull holds the layer's lock, mid-download, until released

    def start():
        return subprocess.Popen([sys.executable, "-m", "nspawn", "pull", ref], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def wait_for(condition):
        deadline = time.monotonic() + 30
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert condition()

    config_gets = lambda: sum(1 for p in proxy.seen if "/blobs/" in p and not p.endswith(layer))  # noqa: E731
    first = start()
    wait_for(lambda: proxy.blob_gets(layer) == 1)
    before = config_gets()
    second = start()
    wait_for(lambda: config_gets() > before)  # the second has its manifest and config: next, the layer's lock
    time.sleep(0.5)
    proxy.release.set()
    outputs = [p.communicate(timeout=60) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    said = [line.split(": ")[1].split(" (")[0] for _, err in outputs for line in err.splitlines()
            if line.startswith(layer[:19])]
    assert said == ["pulled", "already present"]
    assert proxy.blob_gets(layer) == 1
    assert outputs[0][0] == outputs[1][0]  # the same digest


def test_prune_keeps_the_layers_of_a_running_container(registry, test_image, store):
    ref = test_image.push(registry, "prune/img:1", "oci")
    assert nspawn("pull", ref).returncode == 0
    layers = [n for n in image_files(store) if n.startswith("layers/")]
    running = subprocess.Popen([sys.executable, "-m", "nspawn", "run", "--image", ref, "--", "/bin/sh", "-c",
                                "echo started; read line; cat /etc/added"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert running.stdout.readline() == "started\n"
        removed = nspawn("rmi", ref)
        assert removed.returncode == 0 and f"untagged {ref}" in removed.stdout
        pruned = nspawn("prune")
        assert pruned.returncode == 0, pruned.stderr
        assert pruned.stdout.count("a container uses it") == 2
        assert [n for n in image_files(store) if n.startswith("layers/")] == layers
        out, err = running.communicate("go\n", timeout=30)
        assert (running.returncode, out) == (0, "added in layer 2\n"), err
    finally:
        if running.poll() is None:
            running.kill()
    pruned = nspawn("prune")
    assert pruned.stdout.count("deleted sha256:") == 2, pruned.stdout
    assert image_files(store) == []
    assert nspawn("rmi", ref).returncode == 2


def test_a_layer_escaping_its_root_is_refused(registry, test_image, store, tmp_path):
    layout = test_image.layout
    evil = tar_bytes([(entry_info("etc"), None), (entry_info("../../../../tmp/escaped"), b"x")])
    descriptor = add_manifest(layout, [evil], {"os": "linux", "architecture": machine_arch(), "config": {}})
    set_index(layout, "evil", [{**descriptor}])
    push_layout(layout, "evil", f"{registry.host}/evil/img:1")
    done = nspawn("pull", f"{registry.host}/evil/img:1")
    assert done.returncode == 125
    assert "climbs out of the layer's root with '..'; refusing the layer" in done.stderr
    assert not os.path.exists("/tmp/escaped")
    assert not any(n.startswith(("images/", "refs/", "layers/")) for n in image_files(store))


def test_an_index_with_a_windows_entry_gives_this_hosts_platform(registry, test_image, store):
    layout = test_image.layout
    linux = built(layout)[0]
    windows = add_manifest(layout, [tar_bytes([(entry_info("Files/"), None)])],
                           {"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.2113", "config": {}})
    set_index(layout, "multi", [
        {**windows, "platform": {"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.2113"}},
        {"mediaType": linux["mediaType"], "digest": linux["digest"], "size": linux["size"],
         "platform": {"os": "linux", "architecture": machine_arch()}}])
    ref = f"{registry.host}/multi/img:1"
    push_layout(layout, "multi", ref, all_platforms=True)
    pulled = nspawn("pull", ref)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.split() == [ref, linux["digest"]]
    refused = nspawn("pull", "--platform", "windows/amd64", ref)
    assert refused.returncode == 125 and "windows images are unpacked only on windows" in refused.stderr
    other = nspawn("pull", "--platform", "linux/s390x", ref)
    assert other.returncode == 125
    assert f"the image has no linux/s390x entry; it offers windows/amd64 (10.0.20348.2113), linux/{machine_arch()}" in other.stderr


def test_a_token_registry_with_credentials_from_the_docker_config(proxy, registry, test_image, store, tmp_path):
    ref = test_image.push(registry, "private/img:1", "v2s2").replace(registry.host, proxy.host)
    proxy.token_user = ("alice", "s3cret")
    refused = nspawn("pull", ref, env={"DOCKER_CONFIG": str(tmp_path / "none")})
    assert refused.returncode == 125
    assert f"{proxy.host}'s token service http://{proxy.host}/token refused a token anonymously: HTTP 401" in refused.stderr
    (tmp_path / "docker").mkdir()
    import base64

    (tmp_path / "docker" / "config.json").write_text(json.dumps(
        {"auths": {proxy.host: {"auth": base64.b64encode(b"alice:s3cret").decode()}}}))
    pulled = nspawn("pull", ref, env={"DOCKER_CONFIG": str(tmp_path / "docker")})
    assert pulled.returncode == 0, pulled.stderr
    assert any(path.startswith("/token?") and "scope=repository%3Aprivate%2Fimg%3Apull" in path for path in proxy.seen)


def test_a_basic_auth_registry(tmp_path, test_image, store):
    hashed = subprocess.run(["htpasswd", "-Bbn", "bob", "pw"], capture_output=True, text=True, check=True).stdout
    server = RegistryServer(tmp_path / "basic", htpasswd=hashed).start()
    try:
        ref = f"{server.host}/basic/img:1"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", "bob:pw",
                        f"oci:{test_image.layout}:t", f"docker://{ref}"], check=True)
        refused = nspawn("pull", ref, env={"DOCKER_CONFIG": str(tmp_path / "none")})
        assert refused.returncode == 125 and "asks for a user name and password" in refused.stderr
        (tmp_path / "cfg").mkdir()
        (tmp_path / "cfg" / "config.json").write_text(json.dumps({"auths": {f"http://{server.host}/v2/": {
            "username": "bob", "password": "pw"}}}))
        pulled = nspawn("pull", ref, env={"DOCKER_CONFIG": str(tmp_path / "cfg")})
        assert pulled.returncode == 0, pulled.stderr
    finally:
        server.stop()


def test_an_image_of_a_hundred_and_twenty_layers_mounts(registry, test_image, store):
    """Full layer paths would need some 12 kB of mount options; the short names fit the page."""
    layout = test_image.layout
    base_layers = built(layout)[1]
    extra = [tar_bytes([(entry_info("etc"), None), (entry_info(f"etc/layer{i}"), f"{i}\n".encode())])
             for i in range(118)]
    descriptor = add_manifest(layout, base_layers + extra, {"os": "linux", "architecture": machine_arch(), "config": {}})
    set_index(layout, "many", [descriptor])
    ref = f"{registry.host}/many/img:1"
    push_layout(layout, "many", ref)
    ran = nspawn("run", "--image", ref, "--", "/bin/sh", "-c", "cat /etc/layer0 /etc/layer117 /etc/added", timeout=300)
    assert (ran.returncode, ran.stdout) == (0, "0\n117\nadded in layer 2\n"), ran.stderr
    missing = nspawn("run", "--dry-run", "--image", ref)
    assert missing.returncode == 2
    assert f"process_executable: missing; expected it, as the image {ref} names no Entrypoint or Cmd" in missing.stderr
    plan = json.loads(nspawn("run", "--dry-run", "--image", ref, "--", "/bin/true").stdout)
    assert len(plan["lower_layers"]) == 120
    assert sum(len(os.path.join(store, "layers", layer["digest"].split(":")[1], "diff")) for layer in plan["image"]["layers"]) > 4096


def test_ctrl_c_during_the_pull_of_a_run_is_one_line_and_leaves_nothing(proxy, registry, test_image, store):
    ref, layer = _big_layer(proxy.host, test_image, registry, "interrupted/img:1")
    proxy.stall[layer] = 100_000
    runner = subprocess.Popen([sys.executable, "-m", "nspawn", "run", "--image", ref], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proxy.blob_gets(layer) == 0:
        time.sleep(0.05)
    time.sleep(0.3)
    runner.send_signal(signal.SIGINT)
    out, err = runner.communicate(timeout=30)
    assert runner.returncode == 130, err
    assert "Traceback" not in err and f"the pull of {ref} was interrupted; nothing of it is used" in err
    assert os.listdir(os.path.join(store, "tmp")) == []
    assert not any(n.startswith(("images/", "refs/", "layers/" + layer.split(":")[1])) for n in image_files(store))


def test_a_zstd_layer_is_unpacked_and_refused_clearly_without_the_extra(registry, test_image, store, monkeypatch):
    import gzip

    import zstandard

    layout = test_image.layout
    first = built(layout)[1][0]
    zstd_layer = zstandard.ZstdCompressor().compress(gzip.decompress(
        tar_bytes([(entry_info("etc"), None), (entry_info("etc/zstd"), b"from a zstd layer\n")])))
    descriptor = add_manifest(layout, [first], {"os": "linux", "architecture": machine_arch(), "config": {}},
                              extra=[(zstd_layer, "application/vnd.oci.image.layer.v1.tar+zstd")])
    set_index(layout, "zstd", [descriptor])
    ref = f"{registry.host}/zstd/img:1"
    push_layout(layout, "zstd", ref)
    ran = nspawn("run", "--image", ref, "--", "/bin/cat", "/etc/zstd")
    assert (ran.returncode, ran.stdout) == (0, "from a zstd layer\n"), ran.stderr

    from nspawn.images.pull import _decompressed
    from nspawn.images.unpack import LayerError

    monkeypatch.setitem(sys.modules, "zstandard", None)  # as where the extra is not installed
    blob = os.path.join(store, "blob")
    open(blob, "wb").write(zstd_layer)
    with pytest.raises(LayerError, match=r"layer L is zstd-compressed, and the zstandard package is not installed; "
                                         r"expected it \(pip install 'nspawn\[zstd\]'\)"):
        _decompressed(blob, "zstd", "L")


def test_tls_is_verified_and_plain_http_only_for_loopback_or_registries_named_insecure(tmp_path, registry,
                                                                                         test_image, store):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    server = RegistryServer(tmp_path / "tls", tls=(cert, key)).start()
    try:
        ref = f"{server.host}/tls/img:1"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{test_image.layout}:t",
                        f"docker://{ref}"], check=True)
        refused = nspawn("pull", ref)
        assert refused.returncode == 125
        assert "certificate verify failed" in refused.stderr
        assert "expected a certificate this host's CAs (or SSL_CERT_FILE) vouch for" in refused.stderr
        trusted = nspawn("pull", ref, env={"SSL_CERT_FILE": cert})
        assert trusted.returncode == 0, trusted.stderr
    finally:
        server.stop()
    # 127.1 is loopback too, but not by its name: plain HTTP there only when asked for by name
    other_name = f"127.1:{registry.port}/insecure/img:1"
    test_image.push(registry, "insecure/img:1", "oci")
    refused = nspawn("pull", other_name)
    assert refused.returncode == 125
    assert f"if 127.1:{registry.port} serves plain HTTP on purpose, name it in NSPAWN_INSECURE_REGISTRIES" in refused.stderr
    allowed = nspawn("pull", other_name, env={"NSPAWN_INSECURE_REGISTRIES": f"other:1, 127.1:{registry.port}"})
    assert allowed.returncode == 0, allowed.stderr


def test_a_foreign_layer_comes_from_its_url_verified(proxy, registry, test_image, store, tmp_path):
    """A foreign layer the registry does not hold, fetched over HTTPS from the URL its manifest
    names (a server on loopback whose certificate SSL_CERT_FILE vouches for), checked like any."""
    import hashlib
    import http.server
    import ssl
    import threading

    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    layout = test_image.layout
    first_bytes = built(layout)[1][0]
    first = {"digest": "sha256:" + hashlib.sha256(first_bytes).hexdigest(), "size": len(first_bytes)}
    foreign = tar_bytes([(entry_info("etc"), None), (entry_info("etc/foreign"), b"from its own URL\n")])
    import gzip

    digest = lambda data: "sha256:" + hashlib.sha256(data).hexdigest()  # noqa: E731
    config = json.dumps({"os": "linux", "architecture": machine_arch(), "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [digest(gzip.decompress(first_bytes)),
                                                                   digest(gzip.decompress(foreign))]}}).encode()

    class Blob(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(foreign)))
            self.end_headers()
            self.wfile.write(foreign)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Blob)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/layer.tar.gz"
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                               "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                          "digest": digest(config), "size": len(config)},
                               "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                           "digest": first["digest"], "size": first["size"]},
                                          {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                                           "digest": digest(foreign), "size": len(foreign), "urls": [url]}]}).encode()
        proxy.served["/v2/foreign/img/manifests/1"] = (manifest, "application/vnd.docker.distribution.manifest.v2+json")
        proxy.served[f"/v2/foreign/img/blobs/{digest(config)}"] = (config, "application/octet-stream")
        proxy.served[f"/v2/foreign/img/blobs/{first['digest']}"] = (first_bytes, "application/octet-stream")
        ref = f"{proxy.host}/foreign/img:1"
        ran = nspawn("run", "--image", ref, "--", "/bin/cat", "/etc/foreign", env={"SSL_CERT_FILE": cert})
        assert (ran.returncode, ran.stdout) == (0, "from its own URL\n"), ran.stderr
        assert proxy.blob_gets(digest(foreign)) == 0  # not from the registry
    finally:
        server.shutdown()
        server.server_close()


def test_pull_on_a_terminal_shows_a_bar_per_layer_with_bytes_and_time_left(registry, test_image, store):
    ref = test_image.push(registry, "terminal/img:1", "oci")
    shown = subprocess.run(["script", "-qec", f"{sys.executable} -m nspawn pull {ref}", "/dev/null"],
                           capture_output=True, text=True, env={**os.environ, "TERM": "xterm", "COLUMNS": "120"},
                           cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert shown.returncode == 0, shown.stdout
    import re

    assert "━" in shown.stdout and "0:00:00" in shown.stdout  # a bar, and the time left
    assert re.search(r"(?<![\d.])(\d+(\.\d)?)/\1 (MB|kB)", shown.stdout)  # bytes done of bytes, for the big layer
    assert shown.stdout.count(" pulled ") >= 2 and f"{ref} sha256:" in shown.stdout


def test_the_images_user_runs_the_payload_unless_the_config_names_one(registry, test_image, store):
    layout = test_image.layout
    layers = built(layout)[1]
    descriptor = add_manifest(layout, layers, {"os": "linux", "architecture": machine_arch(),
                                               "config": {"User": "1234:5678"}})
    set_index(layout, "user", [descriptor])
    ref = f"{registry.host}/user/img:1"
    push_layout(layout, "user", ref)
    script = "while read key value rest; do case $key in Uid:|Gid:|CapEff:) echo $key $value;; esac; done < /proc/self/status"
    as_image = nspawn("run", "--image", ref, "--", "/bin/sh", "-c", script)
    assert as_image.returncode == 0, as_image.stderr
    assert as_image.stdout.split() == ["Uid:", "1234", "Gid:", "5678", "CapEff:", "0000000000000000"]
    as_root = nspawn("run", "--image", ref, "--user", "0", "--", "/bin/sh", "-c", script)
    assert as_root.returncode == 0, as_root.stderr
    assert as_root.stdout.split()[:4] == ["Uid:", "0", "Gid:", "0"]
