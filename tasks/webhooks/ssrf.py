"""The SSRF guard for webhook URLs: parse strictly, resolve once, refuse internal addresses, connect to the checked one.

``check_url`` is the policy (the resolver is an argument, so tests inject one); ``pinned_transport`` is the httpx
transport that connects to the checked address only, so a DNS answer that changes between the check and the connect
(DNS rebinding) cannot redirect the request. The ``Host`` header, TLS SNI and the certificate check still use the
URL's host name.

Odd IPv4 notations (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``) are decoded here the way
``inet_aton`` and browsers do, so they are checked as the address they really are instead of being left to the
resolver. Every refusal is an ``UnsafeTargetError`` (HTTP 400) naming the reason; a name that does not resolve is a
``TransientError`` (DNS may come back), so a delivery retries it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from bulletin.errors import ConfigError, TransientError, UnsafeTargetError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

MAX_URL_CHARS = 2_048
DEFAULT_PORTS = {"http": 80, "https": 443}

# Named refusals, checked in order (first match names the reason); anything else not globally routable is refused
# by the catch-all `is_global` test after these.
_BLOCKED: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = [
    (ipaddress.ip_network(cidr), reason)
    for cidr, reason in [
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local, cloud metadata"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible, deprecated"),
        ("100::/64", "discard-only"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("2001::/32", "Teredo tunnel"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local, deprecated"),
        ("ff00::/8", "multicast"),
    ]
]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")

# Strict on purpose: no userinfo, no percent-encoding, no zone ids. Anything a lenient parser might read another
# way is refused rather than interpreted.
_NETLOC = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>[0-9]{0,5}))?")
_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<netloc>[^/?#]*)(?P<rest>[/?#].*)?", re.DOTALL)
_HEX = re.compile(r"0[xX][0-9A-Fa-f]*")
_OCTAL = re.compile(r"0[0-7]+")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class Target:
    """A URL that passed the guard, and the one address requests to it must connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str


def default_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6), in the system resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise TransientError(f"webhook host {host!r} did not resolve") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _refuse(reason: str) -> UnsafeTargetError:
    return UnsafeTargetError(f"webhook URL refused: {reason}", field="url")


def _ipv4_number(host: str) -> ipaddress.IPv4Address | None:
    """Decode a host that ends in a number as ``inet_aton`` does; ``None`` for a DNS name."""
    labels = host.removesuffix(".").split(".")
    if not (_HEX.fullmatch(labels[-1]) or labels[-1].isdigit()):
        return None
    if len(labels) > 4:
        raise _refuse("host is neither a DNS name nor an IPv4 address")
    numbers = []
    for label in labels:
        if _HEX.fullmatch(label):
            numbers.append(int(label[2:] or "0", 16))
        elif _OCTAL.fullmatch(label):  # a leading zero means octal to inet_aton
            numbers.append(int(label, 8))
        elif _DECIMAL.fullmatch(label):
            numbers.append(int(label))
        else:
            raise _refuse("host is neither a DNS name nor an IPv4 address")
    *head, tail = numbers
    # The last number fills the bytes the others leave: 127.1 is 127.0.0.1, 2130706433 is 127.0.0.1.
    if any(n > 255 for n in head) or tail >= 256 ** (4 - len(head)):
        raise _refuse("IPv4 address out of range")
    value = tail
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _normalise(address: str) -> IPAddress:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # a resolver may append an IPv6 zone id
    except ValueError:
        raise _refuse("the resolver returned something that is not an IP address") from None
    # The kernel sends ::ffff:a.b.c.d to a.b.c.d: check (and connect to) the IPv4 address itself.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _networks(cidrs: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    if isinstance(cidrs, str):
        raise ConfigError("webhook allowed networks must be a list of CIDRs")
    try:
        return [ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs]
    except ValueError:
        raise ConfigError("webhook allowed networks contain an invalid CIDR") from None


def _embedded_ipv4(ip: IPAddress) -> tuple[ipaddress.IPv4Address, str] | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    return None


def unsafe_reason(ip: IPAddress, allowed: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()) -> str | None:
    """Why connecting to ``ip`` is refused, or ``None`` when it is public or inside an allowed network."""
    allowed = list(allowed)
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    for net, reason in _BLOCKED:
        if ip.version == net.version and ip in net:
            return reason
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        # Not the allowlist: it names where we connect, and here that is a gateway, not the embedded address.
        inner = unsafe_reason(embedded[0])
        return f"{inner}, inside a {embedded[1]} address" if inner else None
    if not ip.is_global:
        return "not globally routable"
    return None


def _parse(url: str, https_only: bool) -> tuple[str, str, int]:
    if not isinstance(url, str) or not url:
        raise _refuse("URL is empty")
    if len(url) > MAX_URL_CHARS:
        raise _refuse(f"URL is longer than {MAX_URL_CHARS} characters")
    # urllib silently drops tabs and newlines, and parsers disagree on backslashes: refuse them all.
    if not url.isascii() or any(c <= " " or c in "\x7f\\" for c in url):
        raise _refuse("URL contains whitespace, control, backslash or non-ASCII characters (use punycode)")
    match = _SCHEME.fullmatch(url)
    if match is None:
        raise _refuse("URL must look like http(s)://host[:port]/path")
    scheme = match["scheme"].lower()
    if scheme not in DEFAULT_PORTS:
        raise _refuse("URL scheme must be http or https")
    if https_only and scheme != "https":
        raise _refuse("URL must use https")
    netloc = _NETLOC.fullmatch(match["netloc"])
    if netloc is None:
        raise _refuse("URL host is malformed (user info, percent-encoding and zone ids are not accepted)")
    port_text = netloc["port"]
    port = int(port_text) if port_text else DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65_535:
        raise _refuse("URL port must be 1-65535")
    if netloc["v6"] is not None:
        try:
            ipaddress.IPv6Address(netloc["v6"])
        except ValueError:
            raise _refuse("URL host is not a valid IPv6 address") from None
        # Kept as written (not normalised) so it compares equal to the host httpx reads and sends.
        return scheme, netloc["v6"].lower(), port
    host = netloc["name"].lower()
    labels = host.removesuffix(".").split(".")
    if len(host) > 254 or any(not label or len(label) > 63 for label in labels):
        raise _refuse("URL host is not a valid DNS name")
    return scheme, host, port


def _agrees_with_httpx(url: str, host: str, port: int) -> bool:
    # The request is built by httpx: if its parser read another host or port than ours, the check proved nothing.
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    # raw_host: the ASCII form that goes on the wire (``host`` would decode punycode).
    return parsed.raw_host.decode("ascii").lower() == host and (parsed.port or DEFAULT_PORTS[parsed.scheme]) == port


def check_url(
    url: str,
    *,
    allowed_networks: Sequence[str] = (),
    https_only: bool = False,
    resolve: Resolver = default_resolve,
) -> Target:
    """Check a webhook URL and return the address to connect to, or raise ``UnsafeTargetError`` naming why not.

    The host is resolved once; the URL is refused if ANY address is internal (outside ``allowed_networks``), and
    the first address is the one ``pinned_transport`` will connect to.
    """
    allowed = _networks(allowed_networks)
    scheme, host, port = _parse(url, https_only)
    literal: IPAddress | None = ipaddress.IPv6Address(host) if ":" in host else _ipv4_number(host)
    if literal is not None:
        addresses = [_normalise(str(literal))]
        what = "host is"
    else:
        resolved = resolve(host, port)
        if not resolved:
            raise TransientError(f"webhook host {host!r} did not resolve")
        addresses = [_normalise(address) for address in resolved]
        what = f"host {host!r} resolves to"
    for ip in addresses:
        reason = unsafe_reason(ip, allowed)
        if reason is not None:
            raise _refuse(f"{what} an internal address ({reason})")
    if not _agrees_with_httpx(url, host, port):
        raise _refuse("URL is read differently by the HTTP client")
    return Target(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))


def check_url_at_registration(
    url: str,
    *,
    allowed_networks: Sequence[str] = (),
    https_only: bool = False,
    resolve: Resolver = default_resolve,
) -> None:
    """Refuse, when a webhook URL is registered, what every send would refuse: ``check_url`` without the DNS need.

    A literal internal address (any notation), or a name that resolves now to one, is an ``UnsafeTargetError``.
    A name that does not resolve now is accepted: registration must not depend on DNS (the name may be created
    later, or resolve only where the sends run), and every send checks it again, so a failure then is recorded and
    retried like any unreachable receiver.
    """
    try:
        check_url(url, allowed_networks=allowed_networks, https_only=https_only, resolve=resolve)
    except TransientError:
        return


# --- Connecting to the checked address only ---


def _budget(timeout: float | None, deadline: float | None, error: type[Exception]) -> float | None:
    """httpx's per-operation timeout, shortened to what is left before the deadline (``error`` once it passed)."""
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise error("the request deadline has passed")
    return remaining if timeout is None else min(timeout, remaining)


class _PinnedStream(httpcore.NetworkStream):
    """A socket stream whose every read and write also respects an overall deadline (if one is set)."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float | None) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _budget(timeout, self._deadline, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _budget(timeout, self._deadline, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        budget = _budget(timeout, self._deadline, httpcore.ConnectTimeout)
        return _PinnedStream(self._inner.start_tls(ssl_context, server_hostname, budget), self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Opens every TCP connection to the checked address, whatever host name httpcore asks for."""

    def __init__(self, address: str, deadline: float | None) -> None:
        self._address = address
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        # No DNS here: `host` is only the URL's name, which SNI and the certificate check still use (httpcore passes
        # it to start_tls itself).
        budget = _budget(timeout, self._deadline, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(self._address, port, budget, local_address, socket_options)
        return _PinnedStream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not webhook targets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@functools.cache
def _verifying_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one loads the CA bundle (20-25 ms of CPU with OpenSSL 3,
    see docs/benchmarks.md), and an SSLContext is safe to share between connections and threads."""
    return httpx.create_ssl_context(verify=True, trust_env=False)


def _ssl_context(verify: bool | ssl.SSLContext) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    return _verifying_context() if verify else httpx.create_ssl_context(verify=False, trust_env=False)


class PinnedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connections all go to ``target.address``, for requests to ``target`` only."""

    def __init__(self, target: Target, *, verify: bool | ssl.SSLContext = True, deadline: float | None = None) -> None:
        ssl_context = _ssl_context(verify)
        super().__init__(verify=ssl_context, trust_env=False, retries=0)
        self._target = target
        # httpx takes no network backend, so the pool it built is replaced by the same pool with ours. `_pool` is
        # the attribute HTTPTransport.handle_request uses (httpx 0.18-0.28); test_ssrf fails loudly if that changes.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            http1=True,
            http2=False,
            retries=0,
            network_backend=_PinnedBackend(target.address, deadline),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or DEFAULT_PORTS.get(url.scheme, 0)
        host = url.raw_host.decode("ascii").lower()
        if (url.scheme, host, port) != (self._target.scheme, self._target.host, self._target.port):
            raise _refuse("request does not go to the checked target")
        return super().handle_request(request)


def pinned_transport(
    target: Target, *, verify: bool | ssl.SSLContext = True, deadline: float | None = None
) -> httpx.HTTPTransport:
    """A transport that connects to ``target.address`` only, keeping the URL's Host header, SNI and cert check.

    ``deadline`` (a ``time.monotonic()`` value, optional) caps the whole exchange: httpx's own timeouts apply to
    each read or write, so a server dripping one byte at a time could otherwise hold a worker for ever.
    """
    return PinnedTransport(target, verify=verify, deadline=deadline)
