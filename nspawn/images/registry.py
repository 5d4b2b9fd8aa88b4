"""A client of the registry HTTP API v2 on the standard library's HTTP client.

Authentication as registries answer it: a 401 with `WWW-Authenticate: Bearer realm=…,service=…`
is answered by fetching a token from the realm (with the user's basic credentials from
~/.docker/config.json `auths` when it has some, anonymously otherwise), a `Basic` challenge
with those credentials. TLS is verified with the system's CAs; plain HTTP is used only for a
loopback registry or one the user names as insecure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request

from nspawn import exitcodes
from nspawn.errors import NspawnError
from nspawn.images.reference import DOCKER_HUB, Reference, is_loopback

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEXES = (OCI_INDEX, DOCKER_LIST)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # what registries themselves accept
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
TIMEOUT_SECONDS = 60


class RegistryError(NspawnError):
    """The registry refused, failed, or sent something that does not check out."""

    def __init__(self, message: str, exit_code: int = exitcodes.LAUNCHER):
        super().__init__(message)
        self.exit_code = exit_code


def docker_config_auths(path: str | None = None) -> dict:
    """`auths` of ~/.docker/config.json (or $DOCKER_CONFIG/config.json): registry → (user, password)."""
    if path is None:
        path = os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            auths = json.load(f).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    found = {}
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            continue
        user, password = entry.get("username"), entry.get("password")
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
        if user:
            host = urllib.parse.urlsplit(key).netloc if "://" in key else key.split("/", 1)[0]
            if host in ("index.docker.io", "registry-1.docker.io"):
                host = DOCKER_HUB
            found[host] = (user, password or "")
    return found


def insecure_registries() -> set:
    """Registries the user allows plain HTTP for: $NSPAWN_INSECURE_REGISTRIES, comma-separated."""
    return {r.strip() for r in os.environ.get("NSPAWN_INSECURE_REGISTRIES", "").split(",") if r.strip()}


class _NoAuthRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects (blob downloads go to a CDN), never carrying the registry's credentials:
    they go in unredirected headers, and this keeps it that way for 307/308 too."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.headers.pop("Authorization", None)
        return new


class Registry:
    def __init__(self, registry: str, *, insecure: set | None = None, credentials: dict | None = None):
        self.registry = registry
        self.api_host = "registry-1.docker.io" if registry == DOCKER_HUB else registry
        insecure = insecure_registries() if insecure is None else insecure
        self.plain_http_allowed = is_loopback(registry) or registry in insecure
        self.scheme = "https"
        self.credentials = (docker_config_auths() if credentials is None else credentials).get(registry)
        self._authorization: dict[str, str] = {}  # scope → header value
        self._opener = urllib.request.build_opener(
            _NoAuthRedirect, urllib.request.HTTPSHandler(context=ssl.create_default_context()))
        self._scheme_known = not self.plain_http_allowed

    def _url(self, path: str) -> str:
        return f"{self.scheme}://{self.api_host}{path}"

    def request(self, repository: str, path: str, accept: tuple = ()):
        """The open response to GET /v2/<repository>/<path>, authenticated as the registry asks."""
        scope = f"repository:{repository}:pull"
        for attempt in range(2):
            req = urllib.request.Request(self._url(f"/v2/{repository}/{path}"))
            if accept:
                req.add_header("Accept", ", ".join(accept))
            if scope in self._authorization:
                req.add_unredirected_header("Authorization", self._authorization[scope])
            try:
                return self._open(req)
            except urllib.error.HTTPError as e:
                if e.code == 401 and attempt == 0:
                    self._authorization[scope] = self._answer(e.headers.get("WWW-Authenticate", ""), scope)
                    e.close()
                    continue
                # A name or tag the registry does not know is the user's input, like a bad config value.
                unknown = e.code == 404 and path.startswith("manifests/")
                raise RegistryError(self._refusal(e, repository, path),
                                    exitcodes.USAGE if unknown else exitcodes.LAUNCHER) from None
        raise AssertionError("unreachable")

    def _open(self, req):
        try:
            return self._opener.open(req, timeout=TIMEOUT_SECONDS)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, ssl.SSLError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            if not self._scheme_known and not isinstance(reason, ssl.SSLCertVerificationError):
                # A loopback or named-insecure registry may speak plain HTTP: HTTPS first, as Docker does.
                self._scheme_known, self.scheme = True, "http"
                req = urllib.request.Request(req.full_url.replace("https://", "http://", 1),
                                             headers=dict(req.header_items()))
                return self._open(req)
            hint = ""
            if isinstance(reason, ssl.SSLCertVerificationError):
                hint = "; expected a certificate this host's CAs (or SSL_CERT_FILE) vouch for"
            elif isinstance(reason, ssl.SSLError):
                hint = (f"; if {self.registry} serves plain HTTP on purpose, name it in "
                        "NSPAWN_INSECURE_REGISTRIES")
            raise RegistryError(f"cannot reach the registry {self.registry}: {reason}{hint}") from None
        finally:
            self._scheme_known = True

    def _answer(self, challenge: str, scope: str) -> str:
        scheme, _, params_text = challenge.partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        if scheme.lower() == "basic":
            if not self.credentials:
                raise RegistryError(f"{self.registry} asks for a user name and password; expected them in "
                                    "~/.docker/config.json `auths` (docker login writes them)")
            return "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        if scheme.lower() != "bearer" or "realm" not in params:
            raise RegistryError(f"{self.registry} answered 401 with the challenge {challenge!r}; expected Bearer or Basic")
        query = {"scope": params.get("scope") or scope}
        if "service" in params:
            query["service"] = params["service"]
        realm = params["realm"]
        if urllib.parse.urlsplit(realm).scheme != "https" and not self.plain_http_allowed:
            raise RegistryError(f"{self.registry}'s token realm {realm} is not HTTPS; refusing to send credentials there")
        req = urllib.request.Request(realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query))
        if self.credentials:
            req.add_unredirected_header("Authorization", "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode())
        try:
            with self._opener.open(req, timeout=TIMEOUT_SECONDS) as response:
                body = json.loads(response.read(MAX_MANIFEST_BYTES))
        except urllib.error.HTTPError as e:
            who = "with the credentials of ~/.docker/config.json" if self.credentials else "anonymously"
            raise RegistryError(f"{self.registry}'s token service {realm} refused a token {who}: HTTP {e.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise RegistryError(f"cannot get a token from {realm}: {getattr(e, 'reason', e)}") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise RegistryError(f"{realm} answered without a token")
        return "Bearer " + token

    def _refusal(self, e: urllib.error.HTTPError, repository: str, path: str) -> str:
        detail = ""
        try:
            errors = json.loads(e.read(65536)).get("errors") or []
            detail = "; ".join(f"{x.get('code')}: {x.get('message')}" for x in errors if isinstance(x, dict))
        except (ValueError, AttributeError, OSError):
            pass
        what = "not found" if e.code == 404 else "access denied" if e.code in (401, 403) else f"HTTP {e.code}"
        return f"{self.registry}/{repository}: {path.replace('manifests/', 'manifest ').replace('blobs/', 'blob ')}: {what}" + (
            f" ({detail})" if detail else "")

    def manifest(self, ref: Reference, wanted: str, accept: tuple = INDEXES + MANIFESTS) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index, its digest checked when asked by one."""
        with self.request(ref.repository, f"manifests/{wanted}", accept) as response:
            body = response.read(MAX_MANIFEST_BYTES + 1)
            media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
        if len(body) > MAX_MANIFEST_BYTES:
            raise RegistryError(f"{ref.name}: the manifest {wanted} is larger than {MAX_MANIFEST_BYTES} bytes")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if wanted.startswith("sha256:") and digest != wanted:
            raise RegistryError(f"{ref.name}: the manifest asked as {wanted} has the digest {digest}; refusing it")
        try:
            media_type = json.loads(body).get("mediaType") or media_type
        except (ValueError, AttributeError):
            raise RegistryError(f"{ref.name}: the manifest {wanted} is not JSON") from None
        return body, media_type, digest

    def blob(self, ref: Reference, digest: str):
        """The open response of a blob (its digest and size are the caller's to check while reading)."""
        return self.request(ref.repository, f"blobs/{digest}")
