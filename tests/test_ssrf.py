"""SSRF guard (spec §5.2): URL checks, address classification, connect-time refusal.

Only loopback is ever dialled here; public addresses are judged, faked, never connected to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpcore
import httpx
import pytest

from recalled_lite.delivery import ssrf
from recalled_lite.delivery.ssrf import DestinationRefused, DestinationRefusedError

# --------------------------------------------------------------------------------------------
# Address classification
# --------------------------------------------------------------------------------------------

REFUSED_IPS = [
    "127.0.0.1", "127.255.255.254", "::1", "10.0.0.1", "172.16.0.1", "172.31.255.255",
    "192.168.1.1", "169.254.169.254", "fe80::1", "fc00::1", "fd12:3456::1", "100.64.0.1",
    "100.127.255.255", "0.0.0.0", "0.1.2.3", "::", "224.0.0.1", "239.255.255.250", "ff02::1",
    "255.255.255.255", "240.0.0.1", "192.0.2.1", "198.51.100.1", "203.0.113.1", "198.18.0.1",
    "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "::127.0.0.1", "::7f00:1",  # IPv4-compatible
    "64:ff9b::127.0.0.1", "64:ff9b::a9fe:a9fe",  # NAT64 of loopback / metadata
    "64:ff9b:1::1",  # local-use NAT64
    "2002:7f00:1::1", "2002:c0a8:101::",  # 6to4 of 127.0.0.1 / 192.168.1.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "fec0::1", "100::1",
]
PUBLIC_IPS = [
    "93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:2800:220:1::", "2001:4860:4860::8888",
    "::ffff:93.184.216.34", "64:ff9b::5db8:d822", "2002:5db8:d822::1", "100.128.0.1",
    "172.32.0.1", "11.0.0.1",
]


@pytest.mark.parametrize("ip", REFUSED_IPS)
def test_non_public_addresses_refused(ip):
    addr = ipaddress.ip_address(ip)
    assert ssrf.is_public_ip(addr) is False
    assert ssrf.refusal_reason(addr)


@pytest.mark.parametrize("ip", PUBLIC_IPS)
def test_public_addresses_accepted(ip):
    assert ssrf.is_public_ip(ipaddress.ip_address(ip)) is True
    assert ssrf.refusal_reason(ip) is None


def test_embedded_v4_named_in_reason():
    reason = ssrf.refusal_reason("::ffff:127.0.0.1")
    assert "127.0.0.1" in reason and "loopback" in reason
    assert "NAT64" in ssrf.refusal_reason("64:ff9b::7f00:1")


# --------------------------------------------------------------------------------------------
# URL syntax and IP literal forms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "normalised", "ip"),
    [
        ("http://127.0.0.1/", "http://127.0.0.1/", "127.0.0.1"),
        ("http://2130706433:8080/x", "http://127.0.0.1:8080/x", "127.0.0.1"),  # decimal
        ("http://0x7f000001/", "http://127.0.0.1/", "127.0.0.1"),  # hex
        ("http://0x7F.0.0.1/", "http://127.0.0.1/", "127.0.0.1"),  # hex part
        ("http://0177.0.0.1/", "http://127.0.0.1/", "127.0.0.1"),  # octal
        ("http://0177.1/", "http://127.0.0.1/", "127.0.0.1"),  # octal + short
        ("http://127.1/", "http://127.0.0.1/", "127.0.0.1"),  # short
        ("http://10.1.258/", "http://10.1.1.2/", "10.1.1.2"),  # last part fills 2 bytes
        ("http://127.0.0.1./", "http://127.0.0.1/", "127.0.0.1"),  # trailing dot
        ("http://0/", "http://0.0.0.0/", "0.0.0.0"),
        ("http://[::1]:8080/", "http://[::1]:8080/", "::1"),
        ("http://[::FFFF:127.0.0.1]/", "http://[::ffff:7f00:1]/", "::ffff:127.0.0.1"),
        ("HTTPS://Example.COM:443/a/b?x=1#frag", "https://example.com/a/b?x=1", None),
        ("http://example.com:8443", "http://example.com:8443/", None),
        ("https://b\u00fccher.de/", "https://xn--bcher-kva.de/", None),
    ],
)
def test_check_url_normalises(url, normalised, ip):
    parsed = ssrf.check_url(url)
    assert parsed.url == normalised
    assert parsed.ip == (ipaddress.ip_address(ip) if ip else None)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://127.0.0.1:6379/", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("example.com/hook", "scheme"),
        ("http://user:pw@example.com/", "userinfo"),
        ("http://example.com@127.0.0.1/", "userinfo"),
        ("http:///path", "host"),
        ("http://:80/", "host"),
        ("http://example.com:0/", "port"),
        ("http://example.com:65536/", "port"),
        ("http://example.com:http/", "port"),
        ("http://::1/", "host"),
        ("http://[::1/", "url"),  # urlsplit: invalid IPv6 URL
        ("http://[fe80::1%25eth0]/", "host"),
        ("http://1.2.3.256/", "host"),
        ("http://1.2.3.4.5/", "host"),
        ("http://08.0.0.1/", "host"),
        ("http://foo.123/", "host"),  # "ends in a number" but is not an address
        ("http://exa_mple%2e.com/", "host"),
        ("http://exa mple.com/", "url"),
        ("http://example.com\\@127.0.0.1/", "url"),
        ("http://example.com/\n", "url"),
        ("http://example.com/" + "a" * 2048, "url"),
    ],
)
def test_check_url_refuses(url, reason):
    with pytest.raises(DestinationRefused) as info:
        ssrf.check_url(url)
    assert info.value.reason == reason


# --------------------------------------------------------------------------------------------
# Creation-time validation (resolution)
# --------------------------------------------------------------------------------------------


def _resolver(mapping: dict[str, list[str]], calls: list[str] | None = None):
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in mapping:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return mapping[host]

    return resolve


MATRIX = [
    "http://127.0.0.1/", "http://[::1]/", "http://10.0.0.1/", "http://169.254.169.254/latest/",
    "http://100.64.0.1/", "http://0.0.0.0/", "http://[::ffff:127.0.0.1]/", "http://2130706433/",
    "http://0x7f000001/", "http://0177.0.0.1/", "http://127.1/", "http://localhost/",
    "http://[64:ff9b::7f00:1]/",
]


@pytest.mark.parametrize("url", MATRIX)
def test_validate_destination_refuses_matrix(url):
    calls: list[str] = []
    with pytest.raises(DestinationRefused) as info:
        asyncio.run(ssrf.validate_destination(url, allow_private=False, resolver=_resolver({}, calls)))
    assert info.value.reason == "address"
    assert ssrf.ALLOW_HINT in str(info.value)
    assert calls == []  # literals and "localhost" are judged without DNS


def test_refusal_message_names_reason():
    with pytest.raises(DestinationRefused, match=r"^destination 10\.0\.0\.1 is a private address; "
                       r"set webhooks\.allow_private_destinations = true or run with --dev"):
        asyncio.run(ssrf.validate_destination("http://10.0.0.1/", False))


def test_validate_destination_public():
    assert asyncio.run(ssrf.validate_destination("http://93.184.216.34/x", False)) == "http://93.184.216.34/x"
    assert asyncio.run(ssrf.validate_destination("https://[2606:2800:220:1::]/", False)) == "https://[2606:2800:220:1::]/"
    resolve = _resolver({"hooks.example.com": ["93.184.216.34", "2606:2800:220:1::"]})
    assert asyncio.run(ssrf.validate_destination("HTTPS://Hooks.Example.com/in", False, resolver=resolve)) == (
        "https://hooks.example.com/in"
    )


def test_one_private_answer_refuses_the_host():
    resolve = _resolver({"mixed.example": ["93.184.216.34", "10.1.2.3"]})
    with pytest.raises(DestinationRefused, match=r"mixed\.example \(10\.1\.2\.3\) is a private address"):
        asyncio.run(ssrf.validate_destination("http://mixed.example/", False, resolver=resolve))


def test_unresolvable():
    with pytest.raises(DestinationRefused, match="could not resolve nowhere.example") as info:
        asyncio.run(ssrf.validate_destination("http://nowhere.example/", False, resolver=_resolver({})))
    assert info.value.reason == "unresolvable"


def test_allow_private_skips_resolution():
    calls: list[str] = []
    resolve = _resolver({}, calls)
    for url in MATRIX:
        assert asyncio.run(ssrf.validate_destination(url, True, resolver=resolve)).startswith("http://")
    assert calls == []
    # Syntax is still enforced.
    with pytest.raises(DestinationRefused):
        asyncio.run(ssrf.validate_destination("ftp://127.0.0.1/", True))


def test_real_resolver_localhost_is_loopback():
    # The system resolver (not a fake) maps localhost to loopback, which is refused.
    addresses = asyncio.run(ssrf.resolve_public("localhost", 80, allow_private=True))
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses)
    with pytest.raises(DestinationRefused):
        asyncio.run(ssrf.resolve_public("localhost", 80, allow_private=False))


# --------------------------------------------------------------------------------------------
# Connect-time guard against a real loopback sink
# --------------------------------------------------------------------------------------------


class _Sink(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.connections = 0
        self.hosts: list[str] = []
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _SinkHandler)

    def get_request(self):
        conn = super().get_request()
        with self._lock:
            self.connections += 1
        return conn


class _SinkHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.hosts.append(self.headers.get("host"))
        body = b"received"
        self.send_response(202)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def sink():
    server = _Sink()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def _post(url: str, allow_private: bool, **kwargs) -> httpx.Response:
    transport = ssrf.make_guarded_transport(allow_private, **kwargs)
    async with httpx.AsyncClient(transport=transport, follow_redirects=False, timeout=5) as client:
        return await client.post(url, content=b'{"id":"whd_1"}')


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "0x7f000001", "127.1", "[::ffff:127.0.0.1]"])
def test_guarded_transport_refuses_loopback_without_connecting(sink, host):
    url = f"http://{host}:{sink.server_port}/"
    with pytest.raises(DestinationRefusedError) as info:
        asyncio.run(_post(url, allow_private=False))
    exc = info.value
    # Usable both ways by the sender: as an httpx transport error and as a refusal.
    assert isinstance(exc, httpx.ConnectError) and isinstance(exc, DestinationRefused)
    assert "loopback" in str(exc) and ssrf.ALLOW_HINT in str(exc)
    assert exc.request.url.port == sink.server_port
    assert sink.connections == 0


def test_dns_rebinding_is_caught_at_connect_time(sink):
    # Public at creation, loopback at send time: the connect-time check refuses, nothing dialled.
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def rebinding(host, port):
        return next(answers)

    url = f"http://rebind.example:{sink.server_port}/"
    assert asyncio.run(ssrf.validate_destination(url, False, resolver=rebinding)) == url
    with pytest.raises(DestinationRefusedError, match=r"rebind\.example \(127\.0\.0\.1\) is a loopback"):
        asyncio.run(_post(url, allow_private=False, resolver=rebinding))
    assert sink.connections == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433"])
def test_allow_private_reaches_the_sink(sink, host):
    response = asyncio.run(_post(f"http://{host}:{sink.server_port}/", allow_private=True))
    assert response.status_code == 202
    assert response.content == b"received"
    assert sink.connections == 1
    assert sink.hosts == [f"{host}:{sink.server_port}"]  # Host header is the URL's, not the IP


def test_unix_sockets_refused():
    backend = ssrf.GuardedBackend(allow_private=True)
    with pytest.raises(DestinationRefused):
        asyncio.run(backend.connect_unix_socket("/tmp/x.sock"))


def test_proxy_cannot_be_configured():
    with pytest.raises(TypeError):
        ssrf.make_guarded_transport(False, proxy="http://127.0.0.1:3128")


# --------------------------------------------------------------------------------------------
# What is dialled vs. what is named (fake network: no packets leave the process)
# --------------------------------------------------------------------------------------------


class _FakeStream(httpcore.AsyncNetworkStream):
    def __init__(self, log: list):
        self.log = log
        self.sent = b""
        self._reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def write(self, buffer, timeout=None):
        self.sent += buffer

    async def read(self, max_bytes, timeout=None):
        reply, self._reply = self._reply[:max_bytes], self._reply[max_bytes:]
        return reply

    async def aclose(self):
        pass

    async def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        self.log.append(("start_tls", server_hostname))
        return self  # pretend TLS; the point is which name httpcore asked for

    def get_extra_info(self, info):
        return None


class _FakeBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, fail: set[str] = frozenset()):
        self.log: list = []
        self.streams: list[_FakeStream] = []
        self.fail = fail

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.log.append(("connect_tcp", host, port))
        if host in self.fail:
            raise httpcore.ConnectError(f"unreachable {host}")
        stream = _FakeStream(self.log)
        self.streams.append(stream)
        return stream

    async def sleep(self, seconds):
        await asyncio.sleep(seconds)


def test_dials_checked_ip_but_tls_and_host_use_the_name():
    fake = _FakeBackend()
    resolve = _resolver({"hooks.example.com": ["93.184.216.34"]})
    response = asyncio.run(
        _post("https://hooks.example.com/in", allow_private=False, resolver=resolve, delegate=fake)
    )
    assert response.status_code == 200
    assert fake.log == [("connect_tcp", "93.184.216.34", 443), ("start_tls", "hooks.example.com")]
    assert b"\r\nHost: hooks.example.com\r\n" in fake.streams[0].sent


def test_falls_through_to_next_checked_address():
    fake = _FakeBackend(fail={"2606:2800:220:1::"})
    resolve = _resolver({"dual.example": ["2606:2800:220:1::", "93.184.216.34"]})
    response = asyncio.run(_post("http://dual.example/", allow_private=False, resolver=resolve, delegate=fake))
    assert response.status_code == 200
    assert [entry[1] for entry in fake.log] == ["2606:2800:220:1::", "93.184.216.34"]


def test_refusal_happens_before_any_dial():
    fake = _FakeBackend()
    resolve = _resolver({"meta.example": ["169.254.169.254"]})
    with pytest.raises(DestinationRefusedError, match="link-local"):
        asyncio.run(_post("http://meta.example/", allow_private=False, resolver=resolve, delegate=fake))
    assert fake.log == []
