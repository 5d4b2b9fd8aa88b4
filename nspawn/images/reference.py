"""Image references as Docker spells them: `[registry[:port]/]repository[:tag][@sha256:digest]`,
with Docker Hub's defaults (`docker.io`, `library/`, `latest`). Pure."""

from __future__ import annotations

from nspawn.records import record

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"  # where docker.io's registry API answers
DEFAULT_TAG = "latest"
# Docker's grammar, checked by hand: compiling its regular expressions would cost every run
# from the store more than the rest of the image's work.
_LOWER_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ALNUM = _LOWER_ALNUM | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset("0123456789abcdef")


def _component_ok(text: str) -> bool:
    """[a-z0-9]+ joined by one '.', one '_', '__' or any run of '-'."""
    if not text or text[0] not in _LOWER_ALNUM or text[-1] not in _LOWER_ALNUM:
        return False
    run = ""
    for char in text:
        if char in _LOWER_ALNUM:
            if run and run not in (".", "_", "__") and set(run) != {"-"}:
                return False
            run = ""
        elif char in "._-":
            run += char
        else:
            return False
    return True


def _tag_ok(tag: str) -> bool:
    return 0 < len(tag) <= 128 and (tag[0] in _ALNUM or tag[0] == "_") and all(c in _ALNUM or c in "_.-" for c in tag)


def digest_ok(digest: str) -> bool:
    return digest.startswith("sha256:") and len(digest) == 71 and all(c in _HEX for c in digest[7:])


def _domain_ok(domain: str) -> bool:
    """host[:port], the host a DNS name, an IPv4 address or a bracketed IPv6 address."""
    host, colon, port = domain.rpartition(":") if not domain.endswith("]") else (domain, "", "")
    if not colon:
        host = domain
    elif not (port.isdigit() and len(port) <= 5):
        return False
    if host.startswith("["):
        inner = host[1:-1]
        return host.endswith("]") and bool(inner) and all(c in _HEX or c in "ABCDEF:." for c in inner)
    return all(label and label[0] in _ALNUM and label[-1] in _ALNUM and all(c in _ALNUM or c == "-" for c in label)
               for label in host.split("."))


EXPECTED = "a reference such as alpine, debian:bookworm, ghcr.io/owner/name:tag or name@sha256:<64 hex digits>"


class ReferenceError(ValueError):
    """A reference Docker would refuse; the message says what is wrong and what is expected."""


@record
class Reference:
    registry: str  # host[:port] as written, docker.io for Docker Hub
    repository: str  # library/alpine
    tag: str | None  # None when only a digest is given
    digest: str | None  # sha256:<hex>

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def wanted(self) -> str:
        """What the registry is asked for: the digest when there is one (it wins over a tag)."""
        return self.digest or self.tag or DEFAULT_TAG


def parse(text: str) -> Reference:
    """The reference `text` names, with Docker's defaults filled in; ReferenceError otherwise."""
    if not text or text != text.strip():
        raise ReferenceError(f"found {text!r}; expected {EXPECTED}")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not digest_ok(digest):
            raise ReferenceError(f"found the digest {digest!r} in {text!r}; expected sha256: and 64 lowercase hex digits")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _tag_ok(tag):
            raise ReferenceError(f"found the tag {tag!r} in {text!r}; expected letters, digits, '_', '.' and '-' "
                                 "(not first), at most 128")
    first, _, path = rest.partition("/")
    if path and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        if not _domain_ok(first):
            raise ReferenceError(f"found the registry {first!r} in {text!r}; expected a host name with an optional :port")
        registry = first
    else:
        registry, path = DOCKER_HUB, rest
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    for component in path.split("/"):
        if not _component_ok(component):
            what = "must be lowercase" if component.lower() != component else "is not a valid name component"
            raise ReferenceError(f"found {text!r}, whose repository part {component!r} {what}; expected {EXPECTED}")
    if len(registry) + 1 + len(path) > 255:
        raise ReferenceError(f"found {text!r}, a name longer than 255 characters; expected a shorter one")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, path, tag, digest)


def is_loopback(registry: str) -> bool:
    """Whether a registry's host is this machine (plain HTTP is allowed there without asking)."""
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry[1:registry.index("]")]
    if host == "localhost" or host == "::1":
        return True
    parts = host.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts)
