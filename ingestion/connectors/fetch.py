"""HTTP(S) fetches of addresses a user gave the server, which are SSRF attempts until
proven otherwise: every host is resolved first and each of its addresses must be public
(or allowed by the operator: ``Limits.fetch_allow``); the connection goes to the address
that was checked, not to a second lookup; redirects are followed by hand, a few at most,
each checked again; bodies are capped and requests time out."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from ingestion.connectors.base import ItemError, Limits

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Response:
    url: str  # after redirects
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


def _allowed_by_operator(
    host: str, port: int, address: ipaddress._BaseAddress, allow: tuple[str, ...]
) -> bool:
    for rule in allow:
        if rule in (host, f"{host}:{port}", f"{address}:{port}", str(address)):
            return True
        try:
            if "/" in rule and address in ipaddress.ip_network(rule, strict=False):
                return True
        except ValueError:
            continue
    return False


def resolve_public(host: str, port: int, limits: Limits) -> str:
    """The address to connect to: the first of the host's addresses, once every one of
    them is public or allowed. ItemError otherwise."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ItemError(f"cannot resolve {host!r}: {exc}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise ItemError(f"{host!r} has no address")
    for address in addresses:
        mapped = getattr(address, "ipv4_mapped", None) or address
        if not mapped.is_global and not _allowed_by_operator(
            host, port, mapped, limits.fetch_allow
        ):
            raise ItemError(
                f"{host} resolves to {address}, a private, loopback or reserved address: "
                "refused (an operator may allow it in RAGSTUDIO_FETCH_ALLOW)"
            )
    return str(addresses[0])


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to an address checked beforehand, with the certificate checked for the name."""

    def __init__(self, address: str, host: str, port: int, timeout: float) -> None:
        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context())
        self._server_name = host

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)  # type: ignore[attr-defined]


def _one(url: str, limits: Limits, headers: dict[str, str]) -> Response:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ItemError(f"only http and https addresses are fetched, not {url[:100]!r}")
    if parts.username or parts.password:
        raise ItemError("addresses with a user name or password are refused")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve_public(host, port, limits)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = _PinnedHTTPSConnection(address, host, port, limits.timeout)
    else:
        connection = http.client.HTTPConnection(address, port, timeout=limits.timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    try:
        connection.request(
            "GET",
            target,
            headers={"Host": host_header, "User-Agent": limits.user_agent, **headers},
        )
        response = connection.getresponse()
        body = response.read(limits.max_bytes + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise ItemError(f"fetching {url[:200]} failed: {exc}") from None
    finally:
        connection.close()
    if len(body) > limits.max_bytes:
        raise ItemError(f"{url[:200]} is larger than {limits.max_bytes:,} bytes (the limit)")
    return Response(url, response.status, {k.lower(): v for k, v in response.getheaders()}, body)


def fetch(url: str, limits: Limits, headers: dict[str, str] | None = None) -> Response:
    """GET ``url`` with redirects followed (each one checked), at most MAX_REDIRECTS."""
    for _hop in range(MAX_REDIRECTS + 1):
        response = _one(url, limits, headers or {})
        if response.status not in (301, 302, 303, 307, 308):
            return response
        location = response.headers.get("location", "")
        if not location:
            raise ItemError(f"{url[:200]} redirects nowhere")
        url = urljoin(url, location)
    raise ItemError(f"more than {MAX_REDIRECTS} redirects")
