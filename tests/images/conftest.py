"""A real registry (Debian's docker-registry) on a loopback port, and test images built inside
the tests: umoci from a root of this host's own sh and cat (and their libraries), a second
layer deleting one file and adding another, Env and WorkingDir set, pushed by skopeo as OCI
and as Docker schema 2, and a multi-platform index with a Windows entry."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request

import pytest

from tests.conftest import skip_unless_ci

TOOLS = ("docker-registry", "skopeo", "umoci")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RegistryServer:
    """docker-registry with a config the test writes, storage in a temporary directory."""

    def __init__(self, directory, htpasswd: str | None = None, tls: tuple | None = None):
        self.directory = str(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        auth = ""
        if htpasswd:
            path = os.path.join(self.directory, "htpasswd")
            with open(path, "w") as f:
                f.write(htpasswd)
            auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {path}\n"
        self.scheme = "https" if tls else "http"
        served = f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else ""
        self.config = os.path.join(self.directory, "config.yml")
        with open(self.config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: "
                    f"{self.directory}/data\n  delete:\n    enabled: true\nhttp:\n  addr: {self.host}\n{served}{auth}")
        self.process = None

    def start(self):
        self.process = subprocess.Popen(["docker-registry", "serve", self.config], stdout=subprocess.DEVNULL,
                                        stderr=open(os.path.join(self.directory, "log"), "ab"))
        for _ in range(200):
            try:
                import ssl

                unverified = ssl._create_unverified_context()  # only to see that it is up
                urllib.request.urlopen(f"{self.scheme}://{self.host}/v2/", timeout=1, context=unverified).close()
                return self
            except urllib.error.HTTPError:
                return self  # 401 from an authenticating registry: it is up
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("docker-registry exited: " + open(os.path.join(self.directory, "log")).read())
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not answer")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def blob_path(self, digest: str) -> str:
        hex_ = digest.split(":", 1)[1]
        return os.path.join(self.directory, "data", "docker", "registry", "v2", "blobs", "sha256", hex_[:2], hex_, "data")


def _need_tools():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        skip_unless_ci(f"needs {', '.join(missing)} (Debian packages docker-registry, skopeo, umoci)")


def host_binaries_root(root: str, programs=("/bin/sh", "/bin/cat")) -> None:
    """A minimal root: these programs and the libraries ldd names for them, at their paths."""
    for program in programs:
        files = {program}
        for line in subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout.splitlines():
            for word in line.split():
                if word.startswith("/"):
                    files.add(word)
        for path in files:
            target = root + path
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.realpath(path), target)


def run_tool(*argv):
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr}")
    return done.stdout


class BuiltImage:
    """The OCI layout the tests push from, and the facts the tests check."""

    def __init__(self, directory):
        self.layout = os.path.join(str(directory), "oci")
        bundle = os.path.join(str(directory), "bundle")
        run_tool("umoci", "init", "--layout", self.layout)
        run_tool("umoci", "new", "--image", self.layout + ":t")
        run_tool("umoci", "unpack", "--image", self.layout + ":t", bundle)
        rootfs = os.path.join(bundle, "rootfs")
        host_binaries_root(rootfs)
        os.makedirs(rootfs + "/etc")
        os.makedirs(rootfs + "/data/work")
        for name, text in (("deleted", "to be deleted\n"), ("kept", "kept\n")):
            with open(f"{rootfs}/etc/{name}", "w") as f:
                f.write(text)
        os.link(f"{rootfs}/etc/kept", f"{rootfs}/etc/kept-link")
        os.symlink("kept", f"{rootfs}/etc/kept-symlink")
        with open(f"{rootfs}/data/owned", "w") as f:
            f.write("owned\n")
        os.chown(f"{rootfs}/data/owned", 1234, 5678)
        os.chmod(f"{rootfs}/data/owned", 0o640)
        os.setxattr(f"{rootfs}/data/owned", "user.note", b"from the layer")
        run_tool("umoci", "repack", "--image", self.layout + ":t", bundle)
        shutil.rmtree(bundle)
        run_tool("umoci", "unpack", "--image", self.layout + ":t", bundle)
        os.unlink(f"{bundle}/rootfs/etc/deleted")
        with open(f"{bundle}/rootfs/etc/added", "w") as f:
            f.write("added in layer 2\n")
        run_tool("umoci", "repack", "--image", self.layout + ":t", bundle)
        shutil.rmtree(bundle)
        run_tool("umoci", "config", "--image", self.layout + ":t", "--config.env", "GREETING=hello from the image",
                 "--config.workingdir", "/data/work", "--config.entrypoint", "/bin/sh",
                 "--config.cmd", "-c", "--config.cmd", "echo \"$GREETING\"; echo cwd=$(pwd); cat /etc/added")
        run_tool("umoci", "gc", "--layout", self.layout)

    def push(self, registry: RegistryServer, name: str, fmt: str) -> str:
        """Push as `fmt` (oci or v2s2); returns the reference."""
        ref = f"{registry.host}/{name}"
        run_tool("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--format", fmt,
                 f"oci:{self.layout}:t", f"docker://{ref}")
        return ref


def _blob(layout: str, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}


def tar_plain(entries) -> bytes:
    """A tar of (TarInfo, bytes or None) pairs."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def tar_bytes(entries) -> bytes:
    """A gzip tar of (TarInfo, bytes or None) pairs."""
    return gzip.compress(tar_plain(entries), mtime=0)


def add_manifest(layout: str, layers: list, config: dict, extra: list = ()) -> dict:
    """A manifest of gzip `layers` (bytes each), then `extra` (bytes, media type) layers that
    are zstd, and `config` in the OCI layout; its descriptor."""
    def plain(data: bytes, media_type: str) -> bytes:
        if media_type.endswith("+zstd"):
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        return gzip.decompress(data)

    all_layers = [(layer, "application/vnd.oci.image.layer.v1.tar+gzip") for layer in layers] + list(extra)
    diff_ids = ["sha256:" + hashlib.sha256(plain(*layer)).hexdigest() for layer in all_layers]
    config = {**config, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_blob = _blob(layout, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    descriptors = [_blob(layout, data, media_type) for data, media_type in all_layers]
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_blob, "layers": descriptors}
    return _blob(layout, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")


def set_index(layout: str, tag: str, manifests: list) -> None:
    """Tag `tag` in the layout as an image index of `manifests` (descriptors with platforms)."""
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
    descriptor = _blob(layout, json.dumps(index).encode(), "application/vnd.oci.image.index.v1+json")
    path = os.path.join(layout, "index.json")
    with open(path) as f:
        top = json.load(f)
    top["manifests"] = [m for m in top["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
    top["manifests"].append({**descriptor, "annotations": {"org.opencontainers.image.ref.name": tag}})
    with open(path, "w") as f:
        json.dump(top, f)


def push_layout(layout: str, tag: str, ref: str, all_platforms: bool = False) -> None:
    run_tool("skopeo", "copy", "--quiet", "--dest-tls-verify=false", *(["--all"] if all_platforms else []),
             "--preserve-digests", f"oci:{layout}:{tag}", f"docker://{ref}")


@pytest.fixture(scope="session")
def test_image(tmp_path_factory):
    _need_tools()
    return BuiltImage(tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="module")  # not the session's: later tests check that no child process is left
def registry(tmp_path_factory, test_image):
    server = RegistryServer(tmp_path_factory.mktemp("registry")).start()
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "store"
    monkeypatch.setenv("NSPAWN_STORE", str(path))
    return str(path)


def manifest_of(registry: RegistryServer, ref_path: str, accept: str) -> dict:
    req = urllib.request.Request(f"http://{registry.host}/v2/{ref_path}", headers={"Accept": accept})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def machine_arch() -> str:
    import platform

    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())




class Proxy:
    """An HTTP front of a registry that the tests steer: a Bearer token it demands (issued by
    its own /token service for the right basic credentials), a blob it stalls, the GETs it saw."""

    def __init__(self, upstream: RegistryServer):
        import http.server
        import threading

        self.upstream = upstream
        self.token_user: tuple | None = None  # (user, password) its /token wants; None: no auth
        self.stall: dict = {}  # blob digest -> bytes sent before waiting on self.release, then the rest
        self.release = threading.Event()
        self.seen: list[str] = []
        self.served: dict = {}  # path -> (body, content type) answered here instead of by the registry
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy.seen.append(self.path)
                if self.path.startswith("/token"):
                    return self._token()
                if proxy.token_user and self.headers.get("Authorization") != "Bearer good-token":
                    challenge = (f'Bearer realm="http://{proxy.host}/token",service="test-registry",'
                                 f'scope="repository:{self.path.split("/")[2]}/{self.path.split("/")[3]}:pull"')
                    return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"token needed"}]}',
                                      {"WWW-Authenticate": challenge, "Content-Type": "application/json"})
                if self.path in proxy.served:
                    body, content_type = proxy.served[self.path]
                    return self._send(200, body, {"Content-Type": content_type})
                req = urllib.request.Request(f"http://{proxy.upstream.host}{self.path}",
                                             headers={"Accept": self.headers.get("Accept", "*/*")})
                try:
                    with urllib.request.urlopen(req) as r:
                        body, status, headers = r.read(), r.status, r.headers
                except urllib.error.HTTPError as e:
                    body, status, headers = e.read(), e.code, e.headers
                digest = self.path.rsplit("/", 1)[-1]
                keep = {k: headers[k] for k in ("Content-Type", "Docker-Content-Digest") if headers.get(k)}
                if digest in proxy.stall:
                    self.send_response(status)
                    for k, v in {**keep, "Content-Length": str(len(body))}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body[:proxy.stall[digest]])
                    self.wfile.flush()
                    proxy.release.wait(60)
                    try:
                        self.wfile.write(body[proxy.stall[digest]:])  # to a pull still there
                    except OSError:
                        pass  # one killed meanwhile
                    return
                self._send(status, body, keep)

            def _token(self):
                import base64

                wanted = "Basic " + base64.b64encode(":".join(proxy.token_user).encode()).decode()
                if self.headers.get("Authorization") != wanted:
                    return self._send(401, b'{"details":"bad credentials"}', {"Content-Type": "application/json"})
                self._send(200, b'{"token":"good-token","expires_in":300}', {"Content-Type": "application/json"})

            def _send(self, status, body, headers):
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def blob_gets(self, digest: str) -> int:
        return sum(1 for path in self.seen if path.endswith("/blobs/" + digest))

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(registry):
    front = Proxy(registry)
    yield front
    front.close()


def entry_info(name: str):
    """A TarInfo: a directory when the name ends with /, else a file."""
    info = tarfile.TarInfo(name.rstrip("/"))
    info.type = tarfile.DIRTYPE if name.endswith("/") or name == "etc" else tarfile.REGTYPE
    info.mode = 0o755 if info.type == tarfile.DIRTYPE else 0o644
    return info
