"""Who may talk to the cluster. Anyone who reaches a Dask scheduler can run code as root on
every nspawn worker, so an address off this machine is used only over TLS with mutual
certificates (the scheduler, each worker and each client prove themselves with a certificate
the cluster's CA signed); plain tcp:// only on loopback. The rule lives here, for the worker
and the batch alike; distributed itself is imported only to make the Security object."""

from __future__ import annotations

import os

import click

SCHEMES = ("tcp", "tls")


class Tls:
    """The CA, certificate and key files, checked to exist."""

    def __init__(self, ca: str, cert: str, key: str):
        self.ca, self.cert, self.key = ca, cert, key

    def security(self):
        """A distributed.security.Security that requires encryption, as client and as worker."""
        from distributed.security import Security

        return Security(require_encryption=True, tls_ca_file=self.ca, tls_client_cert=self.cert, tls_client_key=self.key,
                        tls_worker_cert=self.cert, tls_worker_key=self.key)


def split(address: str) -> tuple[str, str, str]:
    """(scheme, host, port) of tcp://HOST:PORT, tls://[::1]:PORT or HOST:PORT (tcp)."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    return scheme.lower(), host, port


def is_loopback(host: str) -> bool:
    """A literal loopback address or `localhost`; any other name may resolve off this machine."""
    import ipaddress  # here: the batch command's module imports this one for its options

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal(address: str, tls: Tls | None) -> str | None:
    """Why `address` may not be used with these certificates, or None."""
    scheme, host, port = split(address)
    if scheme not in SCHEMES or not host or not port.isdigit():
        return f"{address}: expected tls://HOST:PORT, or tcp://HOST:PORT on loopback"
    if scheme == "tls" and tls is None:
        return f"{address}: tls:// needs the cluster's certificates: --tls-ca, --tls-cert and --tls-key, or --security FILE"
    if scheme == "tcp" and not is_loopback(host):
        return (f"{address}: plain tcp:// is refused off loopback: whoever reaches the scheduler runs code as root "
                "on every worker; use tls:// with mutual certificates (docs/cluster.md)")
    if scheme == "tcp" and tls is not None:
        return f"{address}: certificates were given for a plain tcp:// address; use tls://"
    return None


def tls_from(ca: str | None, cert: str | None, key: str | None, security_file: str | None) -> tuple[Tls | None, list[str]]:
    """The certificates from the options or a security file (JSON: {"ca": …, "cert": …, "key": …},
    paths relative to the file), and the problems found with them."""
    import json

    problems = []
    if security_file:
        if ca or cert or key:
            return None, ["--security FILE replaces --tls-ca, --tls-cert and --tls-key; give one or the other"]
        try:
            with open(security_file, encoding="utf-8") as f:
                given = json.load(f)
        except (OSError, ValueError) as e:
            return None, [f"--security {security_file}: cannot read it: {getattr(e, 'strerror', None) or e}"]
        if not isinstance(given, dict) or sorted(given) != ["ca", "cert", "key"] or not all(isinstance(v, str) for v in given.values()):
            return None, [f"--security {security_file}: expected a JSON object with the paths \"ca\", \"cert\" and \"key\""]
        base = os.path.dirname(os.path.abspath(security_file))
        named = {f"{security_file} {k}": os.path.join(base, v) for k, v in given.items()}
    elif ca or cert or key:
        named = {"--tls-ca": ca, "--tls-cert": cert, "--tls-key": key}
    else:
        return None, []
    for option, path in named.items():
        if not path:
            problems.append(f"{option} is missing: TLS needs the CA, a certificate and its key")
        elif not os.path.isfile(path):
            problems.append(f"{option} {path}: no such file")
    if problems:
        return None, problems
    ca, cert, key = named.values()
    return Tls(ca, cert, key), []


def options(command):
    """--tls-ca, --tls-cert, --tls-key and --security, for `worker` and `batch --cluster`."""
    for flag, name, text in (
            ("--security", "security_file", "A JSON file naming the CA, certificate and key: {\"ca\": …, \"cert\": …, \"key\": …}."),
            ("--tls-key", "tls_key", "This machine's private key (PEM)."),
            ("--tls-cert", "tls_cert", "This machine's certificate, signed by the cluster's CA (PEM)."),
            ("--tls-ca", "tls_ca", "The cluster's CA certificate (PEM), for tls:// schedulers.")):
        command = click.option(flag, name, type=click.Path(dir_okay=False), help=text)(command)
    return command


def resolve(address: str, ca, cert, key, security_file) -> tuple[Tls | None, list[str]]:
    """The certificates to use with `address`, or the problems (each a one-line reason, exit 2),
    the cluster extra's absence among them."""
    from nspawn.cluster import missing

    absent = missing()
    tls, problems = tls_from(ca, cert, key, security_file)
    if absent:
        return None, [absent, *problems]
    if problems:
        return None, problems
    why = refusal(address, tls)
    return (None, [why]) if why else (tls, [])
