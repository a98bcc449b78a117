"""The SSRF guard: every internal range and notation refused, the allowlist honoured, and the pinned connection real.

No test resolves a public name or connects anywhere but 127.0.0.1: names are resolved by an injected resolver, and
the real one is only asked about ``localhost``. The pinned-transport tests run a real HTTP(S) server on loopback and
reach it through host names that resolve nowhere, which only works if the connection goes to the checked address.
"""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bulletin.errors import ConfigError, TransientError, UnsafeTargetError
from tasks.webhooks import check_url_at_registration
from tasks.webhooks.ssrf import Target, check_url, default_resolve, pinned_transport

LOOPBACK = ["127.0.0.0/8"]


def _resolver(table: dict[str, list[str]]):
    calls: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


# --- Refused: every internal range, in every notation ---

BLOCKED = [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.255.255.254:8080/x", "loopback"),
    ("http://localhost/", "loopback"),  # the real resolver: /etc/hosts
    ("http://2130706433/", "loopback"),  # decimal
    ("http://0x7f000001/", "loopback"),  # hex
    ("http://0x7F.0.0.1/", "loopback"),  # hex per part
    ("http://0177.0.0.1/", "loopback"),  # octal
    ("http://0177.1/", "loopback"),  # octal, short
    ("http://127.1/", "loopback"),  # short form
    ("http://127.0.1/", "loopback"),
    ("http://127.0.0.1./", "loopback"),  # trailing dot
    ("http://[::1]/", "loopback"),
    ("http://[0:0:0:0:0:0:0:1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped
    ("http://[::ffff:7f00:1]/", "loopback"),  # IPv4-mapped, hex
    ("http://[::127.0.0.1]/", "IPv4-compatible"),
    ("http://[64:ff9b::127.0.0.1]/", "loopback, inside a NAT64"),
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local, cloud metadata, inside a NAT64"),
    ("http://[2002:7f00:1::1]/", "loopback, inside a 6to4"),
    ("http://[2002:a00:1::]/", "private, inside a 6to4"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://169.254.169.254/latest/meta-data/", "link-local, cloud metadata"),
    ("http://2852039166/", "link-local, cloud metadata"),  # 169.254.169.254 in decimal
    ("http://[::ffff:169.254.169.254]/", "link-local, cloud metadata"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fec0::1]/", "site-local"),
    ("http://10.0.0.1/", "private"),
    ("http://012.0.0.1/", "private"),  # octal 10.0.0.1
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://3232235777/", "private"),  # 192.168.1.1 in decimal
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://100.127.255.254/", "carrier-grade NAT"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[fd12:3456::1]/", "unique-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://192.0.2.1/", "documentation"),
    ("http://198.51.100.7/", "documentation"),
    ("http://203.0.113.9/", "documentation"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://192.0.0.8/", "IETF protocol assignment"),
    ("http://[100::1]/", "discard-only"),
]


@pytest.mark.parametrize(("url", "reason"), BLOCKED)
def test_internal_targets_are_refused_whatever_the_notation(url: str, reason: str) -> None:
    with pytest.raises(UnsafeTargetError, match="internal address") as info:
        check_url(url)
    assert f"({reason}" in str(info.value)
    assert info.value.status_code == 400 and info.value.field == "url"


@pytest.mark.parametrize(
    ("resolved", "reason"),
    [
        (["10.1.2.3"], "private"),
        (["93.184.215.14", "10.0.0.1"], "private"),  # ANY internal answer refuses the name
        (["2606:4700::1111", "::1"], "loopback"),
        (["::ffff:169.254.169.254"], "link-local, cloud metadata"),
        (["fe80::1%eth0"], "link-local"),
        (["100.100.100.200"], "carrier-grade NAT"),  # Alibaba Cloud's metadata address
    ],
)
def test_names_resolving_to_internal_addresses_are_refused(resolved: list[str], reason: str) -> None:
    resolve = _resolver({"hooks.example.com": resolved})
    with pytest.raises(UnsafeTargetError, match=f"'hooks.example.com' resolves to an internal address \\({reason}"):
        check_url("https://hooks.example.com/in", resolve=resolve)
    assert resolve.calls == [("hooks.example.com", 443)]


# --- Allowed: public targets, and loopback only through the allowlist ---


def test_a_public_name_is_resolved_once_and_its_first_address_returned() -> None:
    resolve = _resolver({"hooks.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})
    target = check_url("https://Hooks.Example.com:8443/in?x=1", resolve=resolve)
    assert target == Target(
        url="https://Hooks.Example.com:8443/in?x=1",
        scheme="https",
        host="hooks.example.com",
        port=8443,
        address="93.184.215.14",
    )
    assert resolve.calls == [("hooks.example.com", 8443)]


def test_a_punycode_name_is_checked_and_kept_in_its_ascii_form() -> None:
    resolve = _resolver({"xn--bcher-kva.example": ["93.184.215.14"]})
    assert check_url("https://xn--bcher-kva.example/", resolve=resolve).host == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("url", "address"), [("http://93.184.215.14/", "93.184.215.14"), ("http://[2606:4700::1111]/", "2606:4700::1111")]
)
def test_public_ip_literals_pass_without_resolving(url: str, address: str) -> None:
    assert check_url(url, resolve=_resolver({})).address == address


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://127.1/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_loopback_is_allowed_through_the_allowlist(url: str) -> None:
    assert check_url(url, allowed_networks=LOOPBACK).address == "127.0.0.1"


def test_ipv6_loopback_needs_its_own_allowlist_entry() -> None:
    with pytest.raises(UnsafeTargetError, match="loopback"):
        check_url("http://[::1]/", allowed_networks=LOOPBACK)
    assert check_url("http://[::1]/", allowed_networks=["::1/128"]).address == "::1"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/",
        "http://[64:ff9b::7f00:1]/",  # a NAT64 gateway's loopback is not ours
        "http://[2002:7f00:1::]/",
    ],
)
def test_the_allowlist_opens_only_what_it_names(url: str) -> None:
    with pytest.raises(UnsafeTargetError, match="internal address"):
        check_url(url, allowed_networks=LOOPBACK)


def test_one_internal_answer_outside_the_allowlist_still_refuses() -> None:
    resolve = _resolver({"bulletin.test": ["127.0.0.1", "10.0.0.1"]})
    with pytest.raises(UnsafeTargetError, match="private"):
        check_url("http://bulletin.test/", allowed_networks=LOOPBACK, resolve=resolve)


# --- Malformed URLs ---


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("ftp://example.com/", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("gopher://127.0.0.1:6379/_INFO", "http or https"),
        ("//example.com/", "look like"),
        ("example.com/hook", "look like"),
        ("http:///path", "host is malformed"),
        ("http://user:hunter2@example.com/", "user info"),
        ("http://example.com@127.0.0.1/", "user info"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com\t/", "whitespace"),
        ("http://example.com/\r\nX: y", "whitespace"),
        ("http://example.com\\@127.0.0.1/", "backslash"),
        ("http://exämple.com/", "non-ASCII"),
        ("http://%31%32%37.0.0.1/", "percent-encoding"),
        ("http://[fe80::1%25eth0]/", "zone ids"),
        ("http://[::1/", "host is malformed"),
        ("http://[1::2::3]/", "IPv6"),
        ("http://[not:an:ipv6]/", "host is malformed"),
        ("http://example.com:0/", "port"),
        ("http://example.com:65536/", "port"),
        ("http://example.com:99999/", "port"),
        ("http://example.com:+80/", "host is malformed"),
        ("http://example.com:8o/", "host is malformed"),
        ("http://1.2.3.4.5/", "neither a DNS name nor an IPv4"),
        ("http://08.0.0.1/", "neither a DNS name nor an IPv4"),
        ("http://example.123/", "neither a DNS name nor an IPv4"),
        ("http://256.0.0.1/", "out of range"),
        ("http://4294967296/", "out of range"),
        ("http://a..b/", "DNS name"),
        ("http://" + "a" * 64 + ".com/", "DNS name"),
        ("http://example.com/" + "a" * 2048, "longer than"),
    ],
)
def test_malformed_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeTargetError, match=reason) as info:
        check_url(url, resolve=_resolver({}))
    assert "hunter2" not in str(info.value)


def test_https_only_refuses_http() -> None:
    with pytest.raises(UnsafeTargetError, match="https"):
        check_url("http://93.184.215.14/", https_only=True)
    assert check_url("https://93.184.215.14/", https_only=True).port == 443


def test_a_url_httpx_would_read_differently_is_refused() -> None:
    # httpx rejects zero-padded dotted quads; rather than guess what it would do, the guard refuses.
    with pytest.raises(UnsafeTargetError, match="read differently"):
        check_url("http://0177.0.0.1/", allowed_networks=LOOPBACK)


def test_the_refusal_never_echoes_the_query_string() -> None:
    with pytest.raises(UnsafeTargetError) as info:
        check_url("http://127.0.0.1/hook?token=s3cr3t-value")
    assert "s3cr3t" not in str(info.value)


def test_an_invalid_allowlist_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CIDR"):
        check_url("http://127.0.0.1/", allowed_networks=["127.0.0.0/33"])
    with pytest.raises(ConfigError, match="list"):
        check_url("http://127.0.0.1/", allowed_networks="127.0.0.0/8")


def test_a_name_that_does_not_resolve_is_transient() -> None:
    with pytest.raises(TransientError, match="did not resolve"):
        check_url("http://nowhere.test/", resolve=_resolver({"nowhere.test": []}))


@pytest.mark.parametrize(("url", "reason"), BLOCKED)
def test_registration_refuses_every_blocked_literal(url: str, reason: str) -> None:
    with pytest.raises(UnsafeTargetError, match="internal address") as info:
        check_url_at_registration(url)
    assert f"({reason}" in str(info.value)


def test_registration_resolves_names_and_accepts_one_that_does_not_resolve_yet() -> None:
    with pytest.raises(UnsafeTargetError, match="'localhost' resolves to an internal address \\(loopback"):
        check_url_at_registration("http://localhost:9/x")  # the real resolver: localhost is in every hosts file
    internal = _resolver({"hooks.example.com": ["93.184.215.14", "10.0.0.1"]})
    with pytest.raises(UnsafeTargetError, match="resolves to an internal address \\(private"):
        check_url_at_registration("https://hooks.example.com/x", resolve=internal)
    check_url_at_registration("https://hooks.example.com/x", resolve=_resolver({"hooks.example.com": []}))
    check_url_at_registration("https://receiver.invalid/x")  # RFC 6761: never resolves; checked again at each send
    check_url_at_registration("http://127.0.0.1:9/x", allowed_networks=["127.0.0.0/8"])
    with pytest.raises(UnsafeTargetError, match="https"):
        check_url_at_registration("http://receiver.invalid/x", https_only=True)


def test_a_resolver_answering_garbage_is_refused() -> None:
    with pytest.raises(UnsafeTargetError, match="not an IP address"):
        check_url("http://odd.test/", resolve=_resolver({"odd.test": ["not-an-ip"]}))


def test_default_resolve_uses_the_system_resolver() -> None:
    assert "127.0.0.1" in default_resolve("localhost", 80)


# --- The pinned connection, against real servers on 127.0.0.1 ---


@dataclass
class Seen:
    hosts: list[str] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        seen: Seen = self.server.seen  # type: ignore[attr-defined]
        seen.hosts.append(self.headers["Host"])
        if self.path == "/drip":  # one header byte at a time, far slower than any sane server
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 100:
                if seen.stop.wait(0.1):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # handshakes the client refuses on purpose


def _serve(context: ssl.SSLContext | None = None, bind: str = "127.0.0.1") -> Iterator[tuple[int, Seen]]:
    server = _Server((bind, 0), _Handler)
    server.seen = Seen()  # type: ignore[attr-defined]
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], server.seen  # type: ignore[attr-defined]
    finally:
        server.seen.stop.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_server() -> Iterator[tuple[int, Seen]]:
    yield from _serve()


@dataclass(frozen=True)
class Pki:
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA and a certificate for bulletin.test only (not for 127.0.0.1): SNI and the name check must work."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bulletin test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bulletin.test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("bulletin.test")]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder: Path = tmp_path_factory.mktemp("pki")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client_context = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return Pki(server_context, client_context)


def test_the_request_goes_to_the_checked_address_with_the_urls_host_header(http_server: tuple[int, Seen]) -> None:
    port, seen = http_server
    # bulletin.test resolves nowhere for real: reaching the server proves the pinned address was used.
    resolve = _resolver({"bulletin.test": ["127.0.0.1"]})
    target = check_url(f"http://bulletin.test:{port}/hook", allowed_networks=LOOPBACK, resolve=resolve)
    with httpx.Client(transport=pinned_transport(target)) as client:
        response = client.get(target.url)
    assert response.status_code == 200 and response.text == "ok"
    assert seen.hosts == [f"bulletin.test:{port}"]
    assert resolve.calls == [("bulletin.test", port)]  # once, at the check; never again at connect time


def test_an_odd_notation_reaches_the_decoded_address(http_server: tuple[int, Seen]) -> None:
    port, seen = http_server
    target = check_url(f"http://2130706433:{port}/hook", allowed_networks=LOOPBACK)
    with httpx.Client(transport=pinned_transport(target)) as client:
        assert client.get(target.url).status_code == 200
    assert seen.hosts == [f"2130706433:{port}"]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_address_is_pinned_too() -> None:
    for port, seen in _serve(bind="::1"):
        resolve = _resolver({"bulletin.test": ["::1"]})
        target = check_url(f"http://bulletin.test:{port}/", allowed_networks=["::1/128"], resolve=resolve)
        with httpx.Client(transport=pinned_transport(target)) as client:
            assert client.get(target.url).status_code == 200
        assert target.address == "::1" and seen.hosts == [f"bulletin.test:{port}"]


def test_the_pinned_transport_refuses_any_other_target(http_server: tuple[int, Seen]) -> None:
    port, seen = http_server
    target = check_url(
        f"http://bulletin.test:{port}/", allowed_networks=LOOPBACK, resolve=_resolver({"bulletin.test": ["127.0.0.1"]})
    )
    with (
        httpx.Client(transport=pinned_transport(target)) as client,
        pytest.raises(UnsafeTargetError, match="checked target"),
    ):
        client.get(f"http://elsewhere.test:{port}/")
    assert seen.hosts == []


def test_tls_uses_the_host_name_for_sni_and_the_certificate_check(pki: Pki) -> None:
    sni: list[str | None] = []
    pki.server_context.sni_callback = lambda sock, name, ctx: sni.append(name)
    for port, seen in _serve(pki.server_context):
        resolve = _resolver({"bulletin.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        target = check_url(f"https://bulletin.test:{port}/", allowed_networks=LOOPBACK, resolve=resolve)
        with httpx.Client(transport=pinned_transport(target, verify=pki.client_context)) as client:
            assert client.get(target.url).text == "ok"
        assert sni == ["bulletin.test"] and seen.hosts == [f"bulletin.test:{port}"]
        # Same address, another name: the certificate (for bulletin.test only) must not be accepted for it.
        other = check_url(f"https://other.test:{port}/", allowed_networks=LOOPBACK, resolve=resolve)
        with httpx.Client(transport=pinned_transport(other, verify=pki.client_context)) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                client.get(other.url)
        assert len(seen.hosts) == 1


def test_the_deadline_bounds_a_server_that_drips_bytes(http_server: tuple[int, Seen]) -> None:
    port, _ = http_server
    target = check_url(f"http://127.0.0.1:{port}/drip", allowed_networks=LOOPBACK)
    start = time.monotonic()
    transport = pinned_transport(target, deadline=start + 0.5)
    # Each read is well within httpx's own 5 s timeout: only the overall deadline can stop this.
    with httpx.Client(transport=transport, timeout=5.0) as client, pytest.raises(httpx.ReadTimeout):
        client.get(target.url)
    assert time.monotonic() - start < 1.5
