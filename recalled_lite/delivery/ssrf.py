"""SSRF guard for webhook destinations (spec §5.2).

A webhook URL is chosen by an API client, and the server then makes requests to it from inside
the operator's network. Unless ``--dev`` or ``webhooks.allow_private_destinations = true``:

* only ``http``/``https`` URLs without userinfo are accepted, and the host is normalised;
  IP literals are recognised in every form browsers and libc accept (``127.0.0.1``,
  ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``, ``[::1]``);
* every address a host resolves to must be public (:func:`is_public_ip`) - checked once when a
  subscription is created (:func:`validate_destination`, mapped to a 400 by the API) and again
  at connect time (:class:`GuardedBackend`), where the guard resolves the name itself, checks
  every address and dials the checked address. The second check is what defeats DNS rebinding
  (a name that resolved to a public address at creation and to 127.0.0.1 later): the address
  actually dialled is always one that was just checked.

Use :func:`make_guarded_transport` for the sender's ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

__all__ = [
    "MAX_URL_LENGTH",
    "ALLOW_HINT",
    "DestinationRefused",
    "DestinationRefusedError",
    "ParsedURL",
    "Resolver",
    "check_url",
    "parse_ip_literal",
    "is_public_ip",
    "refusal_reason",
    "resolve_public",
    "validate_destination",
    "GuardedBackend",
    "GuardedTransport",
    "make_guarded_transport",
]

MAX_URL_LENGTH = 2048
ALLOW_HINT = (
    "set webhooks.allow_private_destinations = true or run with --dev to allow it"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = typing.Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
#: ``async (host, port) -> [address, ...]``; injectable for tests. The default uses the running
#: asyncio loop's ``getaddrinfo`` (a thread pool, so resolution never blocks the loop).
Resolver = Callable[[str, int], Awaitable[list[str]]]


class DestinationRefused(Exception):
    """A webhook destination is not allowed (bad URL, or a non-public address).

    ``str(exc)`` is a human message naming the reason, fit for an API error or an attempt's
    ``error``. ``reason`` is a short machine code (``"scheme"``, ``"url"``, ``"userinfo"``,
    ``"port"``, ``"host"``, ``"unresolvable"``, ``"address"``); ``address`` is the offending IP,
    when there is one.
    """

    def __init__(self, message: str, *, reason: str = "address", address: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.address = address


class DestinationRefusedError(DestinationRefused, httpx.ConnectError):
    """What :class:`GuardedTransport` raises when the connect-time guard refuses.

    It is both a :class:`DestinationRefused` and an :class:`httpx.ConnectError`, so a sender
    that records ``str(exc)`` for any ``httpx.HTTPError`` records the refusal reason, and one
    that wants to tell refusals apart can catch :class:`DestinationRefused`. No connection was
    opened when this is raised.
    """

    def __init__(self, refused: DestinationRefused, request: httpx.Request | None = None):
        httpx.ConnectError.__init__(self, str(refused), request=request)
        self.reason = refused.reason
        self.address = refused.address


# --------------------------------------------------------------------------------------------
# Address classification
# --------------------------------------------------------------------------------------------

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Every IPv4 range that is not globally routable unicast (IANA special-purpose registry,
# RFC 6890 and updates). Explicit tables rather than ipaddress.is_global/is_private, whose
# answers changed between Python patch releases (and is_global calls multicast "global").
_V4_REFUSED: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "an unspecified ('this network') address"),
    (_V4("10.0.0.0/8"), "a private address"),
    (_V4("100.64.0.0/10"), "a carrier-grade NAT (shared, 100.64.0.0/10) address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("169.254.0.0/16"),
     "a link-local address (cloud metadata services such as 169.254.169.254 live here)"),
    (_V4("172.16.0.0/12"), "a private address"),
    (_V4("192.0.0.0/24"), "a reserved (IETF protocol assignment) address"),
    (_V4("192.0.2.0/24"), "a documentation (TEST-NET-1) address"),
    (_V4("192.88.99.0/24"), "a reserved (deprecated 6to4 relay anycast) address"),
    (_V4("192.168.0.0/16"), "a private address"),
    (_V4("198.18.0.0/15"), "a reserved (benchmarking) address"),
    (_V4("198.51.100.0/24"), "a documentation (TEST-NET-2) address"),
    (_V4("203.0.113.0/24"), "a documentation (TEST-NET-3) address"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("240.0.0.0/4"), "a reserved or broadcast address"),
)

# IPv6 ranges whose low 32 bits carry an IPv4 address that is what actually gets reached
# (mapped: the kernel connects over IPv4; NAT64: a translator forwards to that IPv4). These are
# judged by the embedded address, so ::ffff:127.0.0.1 is loopback and ::ffff:93.184.216.34 is
# public.
_V6_EMBEDS_V4_LOW32: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::ffff:0:0/96"), "an IPv4-mapped address"),
    (_V6("64:ff9b::/96"), "a NAT64 address"),
)
_V6_6TO4 = _V6("2002::/16")  # IPv4 in bits 16..47 (RFC 3056)

_V6_REFUSED: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "the unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    # Deprecated IPv4-compatible (::a.b.c.d) and SIIT IPv4-translated forms: no legitimate
    # receiver uses them and stacks differ in how they route them, so refuse outright.
    (_V6("::/96"), "a deprecated IPv4-compatible address"),
    (_V6("::ffff:0:0:0/96"), "an IPv4-translated address"),
    # Local-use NAT64 (RFC 8215) only exists inside one operator's network.
    (_V6("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_V6("100::/64"), "a reserved (discard-only) address"),
    # Teredo embeds an obfuscated client IPv4 and a server IPv4; it is a tunnel, not a receiver.
    (_V6("2001::/32"), "a Teredo tunnel address"),
    (_V6("2001:db8::/32"), "a documentation address"),
    (_V6("2001::/23"), "a reserved (IETF protocol assignment) address"),
    (_V6("3fff::/20"), "a documentation address"),
    (_V6("5f00::/16"), "a reserved (SRv6 SID) address"),
    (_V6("fc00::/7"), "a private (unique local) address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a deprecated site-local (private) address"),
    (_V6("ff00::/8"), "a multicast address"),
)
_V6_GLOBAL_UNICAST = _V6("2000::/3")


def refusal_reason(ip: IPAddress | str) -> str | None:
    """Why ``ip`` is not a public destination (e.g. ``"a loopback address"``), or ``None``."""
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        for net, why in _V4_REFUSED:
            if ip in net:
                return why
        return None
    if ip.scope_id:
        # fe80::1%eth0 etc.: scoped addresses are local to one link by definition.
        return "a scoped (link-local) address"
    for net, what in _V6_EMBEDS_V4_LOW32:
        if ip in net:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            why = refusal_reason(inner)
            return None if why is None else f"{what} of {inner}, which is {why}"
    if ip in _V6_6TO4:
        inner = ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)
        why = refusal_reason(inner)
        return None if why is None else f"a 6to4 address of {inner}, which is {why}"
    for net, why in _V6_REFUSED:
        if ip in net:
            return why
    if ip not in _V6_GLOBAL_UNICAST:
        # Everything outside 2000::/3 is either special-purpose (handled above) or unallocated.
        return "a reserved (not global unicast) address"
    return None


def is_public_ip(ip: IPAddress | str) -> bool:
    """True when ``ip`` is a globally routable unicast address a webhook may be sent to.

    Refused: loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local
    (169.254/16 incl. 169.254.169.254, fe80::/10), CGNAT 100.64/10, unspecified (0.0.0.0/8, ::),
    multicast, reserved/broadcast, documentation and benchmarking ranges, IPv4-compatible,
    IPv4-translated, local-use NAT64, Teredo, and anything outside 2000::/3. IPv4-mapped
    (``::ffff:a.b.c.d``), NAT64 (``64:ff9b::a.b.c.d``) and 6to4 (``2002:AABB:CCDD::``) addresses
    are judged by the IPv4 address they embed.
    """
    return refusal_reason(ip) is None


# --------------------------------------------------------------------------------------------
# URL checking
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedURL:
    """A syntactically acceptable destination. ``url`` is the normalised form to store/send."""

    url: str
    scheme: str  # "http" | "https"
    host: str  # lower-case ASCII hostname, or canonical IP text (IPv6 without brackets)
    port: int  # effective port (default filled in)
    ip: IPAddress | None  # set when the host is an IP literal in any accepted form


def _parse_ipv4_number(part: str) -> int | None:
    # One component as inet_aton / the WHATWG URL parser read it: 0x.. hex, 0.. octal, decimal.
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
        if digits == "":
            return 0  # WHATWG: "0x" alone is zero
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits.isascii():
        return None
    try:
        return int(digits, base) if digits.isalnum() else None
    except ValueError:
        return None


def _ends_in_number(host: str) -> bool:
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    last = parts[-1]
    if last.isascii() and last.isdigit():
        return True
    return last[:2] in ("0x", "0X") and all(c in "0123456789abcdefABCDEF" for c in last[2:])


def parse_ip_literal(host: str) -> IPAddress | None:
    """Parse ``host`` as an IP literal in any form browsers or libc accept, else ``None``.

    IPv4: 1 to 4 dot-separated numbers, each decimal, ``0x`` hex or ``0``-prefixed octal; the
    last number fills the remaining bytes (``127.1`` = ``127.0.0.1``, ``2130706433`` =
    ``0x7f000001`` = ``127.0.0.1``), optional trailing dot. IPv6: with or without brackets.
    Raises :class:`DestinationRefused` for a host that *looks* numeric but is not a valid
    address (WHATWG refuses those too; libc might read them differently).
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise DestinationRefused(f"invalid IPv6 address {host!r}", reason="host") from None
    if not host or not _ends_in_number(host):
        return None
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    numbers = [_parse_ipv4_number(p) if p else None for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise DestinationRefused(f"invalid IPv4 address {host!r}", reason="host")
    *head, last = typing.cast(list[int], numbers)
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise DestinationRefused(f"invalid IPv4 address {host!r} (out of range)", reason="host")
    value = last
    for i, n in enumerate(head):
        value |= n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def _normalise_hostname(host: str) -> str:
    host = host.lower()
    if not host.isascii():
        try:
            import idna  # httpx's own dependency; IDNA 2008 + UTS 46 like httpx itself

            host = idna.encode(host, uts46=True).decode("ascii")
        except Exception as exc:  # idna.IDNAError, UnicodeError
            raise DestinationRefused(f"invalid international hostname: {exc}", reason="host") from None
    if not set(host) <= _HOST_CHARS:
        raise DestinationRefused(f"invalid character in hostname {host!r}", reason="host")
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host.rstrip(".")) > 253 or any(not 0 < len(label) <= 63 for label in labels):
        raise DestinationRefused(f"invalid hostname {host!r}", reason="host")
    return host


def check_url(url: str) -> ParsedURL:
    """Check a destination URL's syntax and return it normalised; no DNS, no network.

    Rules: a string of at most 2048 characters without whitespace, control characters or
    backslashes; scheme ``http`` or ``https``; a host; no userinfo (``user:pass@`` is refused,
    also because it is a classic way to disguise the real host); a port in 1..65535 if given.
    The host is lower-cased and IDNA-encoded; IP literals in any form (see
    :func:`parse_ip_literal`) are rewritten to canonical text, so what is stored is what httpx
    and libc will read. The fragment is dropped (never sent); an empty path becomes ``/``.

    Whether the host is *allowed* is not decided here; see :func:`validate_destination`.
    Raises :class:`DestinationRefused`.
    """
    if not isinstance(url, str) or not url:
        raise DestinationRefused("URL must be a non-empty string", reason="url")
    if len(url) > MAX_URL_LENGTH:
        raise DestinationRefused(f"URL is longer than {MAX_URL_LENGTH} characters", reason="url")
    # urlsplit silently drops tabs/newlines and ignores backslashes that browsers treat as
    # slashes; refusing them avoids the two parsers disagreeing about which host is meant.
    if any(c <= " " or c == "\x7f" or c == "\\" for c in url):
        raise DestinationRefused(
            "URL contains whitespace, control characters or backslashes", reason="url"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise DestinationRefused(f"malformed URL: {exc}", reason="url") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise DestinationRefused(
            f"URL scheme {parts.scheme or '(none)'!r} is not allowed; use http or https",
            reason="scheme",
        )
    netloc = parts.netloc
    if "@" in netloc:
        raise DestinationRefused("URL must not contain a username or password", reason="userinfo")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise DestinationRefused("unterminated IPv6 address in URL", reason="host")
        raw_host, rest = netloc[1:end], netloc[end + 1:]
        if "%" in raw_host:
            raise DestinationRefused("IPv6 zone identifiers are not allowed", reason="host")
        if rest and not rest.startswith(":"):
            raise DestinationRefused("malformed host in URL", reason="host")
        port_text = rest[1:] if rest else None
        bracketed = True
    else:
        if netloc.count(":") > 1:
            raise DestinationRefused("IPv6 addresses must be written in [brackets]", reason="host")
        raw_host, colon, port_text = netloc.partition(":")
        port_text = port_text if colon else None
        bracketed = False
    if not raw_host:
        raise DestinationRefused("URL has no host", reason="host")

    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise DestinationRefused(f"invalid port {port_text!r}", reason="port")
        port = int(port_text)
    else:
        port = _DEFAULT_PORTS[scheme]

    if bracketed:
        try:
            ip: IPAddress | None = ipaddress.IPv6Address(raw_host)
        except ValueError:
            raise DestinationRefused(f"invalid IPv6 address {raw_host!r}", reason="host") from None
    else:
        ip = parse_ip_literal(raw_host.lower())

    if ip is None:
        host = _normalise_hostname(raw_host)
        url_host = host
    else:
        host = str(ip)
        url_host = f"[{host}]" if ip.version == 6 else host

    port_part = "" if port == _DEFAULT_PORTS[scheme] else f":{port}"
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    normalised = f"{scheme}://{url_host}{port_part}{path}{query}"
    return ParsedURL(url=normalised, scheme=scheme, host=host, port=port, ip=ip)


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


async def _default_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [info[4][0] for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


def _refusal(host: str, address: str, why: str) -> DestinationRefused:
    subject = f"destination {address}" if host == address else f"destination {host} ({address})"
    return DestinationRefused(f"{subject} is {why}; {ALLOW_HINT}", reason="address", address=address)


def _is_localhost_name(host: str) -> bool:
    # RFC 6761: "localhost" and "*.localhost" are loopback whatever DNS says.
    name = host.rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


async def resolve_public(
    host: str, port: int, allow_private: bool, *, resolver: Resolver | None = None
) -> list[str]:
    """Resolve ``host`` and return its addresses (deduplicated, resolver order).

    Unless ``allow_private``, EVERY address must be public (:func:`is_public_ip`): one private
    answer among public ones refuses the whole host, because which one gets dialled is not
    ours to predict. IP literals (in any accepted form) are judged without DNS. Raises
    :class:`DestinationRefused`, including ``"could not resolve <host>: ..."`` when the name
    does not resolve.
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    literal = parse_ip_literal(name.lower())
    if literal is not None:
        addresses = [str(literal)]
    else:
        if not allow_private and _is_localhost_name(name.lower()):
            raise DestinationRefused(
                f"destination {name} is a loopback name; {ALLOW_HINT}", reason="address"
            )
        try:
            answers = await (resolver or _default_resolver)(name, port)
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise DestinationRefused(
                f"could not resolve {name}: {detail}", reason="unresolvable"
            ) from None
        # Scope ids (fe80::1%eth0) are dropped for judging; such addresses are refused anyway.
        addresses = list(dict.fromkeys(a.split("%", 1)[0] for a in answers))
        if not addresses:
            raise DestinationRefused(
                f"could not resolve {name}: no addresses", reason="unresolvable"
            )
    if not allow_private:
        for address in addresses:
            why = refusal_reason(ipaddress.ip_address(address))
            if why is not None:
                raise _refusal(name, address, why)
    return addresses


async def validate_destination(
    url: str, allow_private: bool, *, resolver: Resolver | None = None
) -> str:
    """Check a subscription URL at creation/update; return the normalised URL.

    Syntax always (:func:`check_url`). Unless ``allow_private``, the host must also resolve,
    and only to public addresses. With ``allow_private`` nothing is resolved, so a dev
    receiver that is not up yet can still be registered. Raises :class:`DestinationRefused`.
    This check alone is not enough (DNS can change afterwards); the sender must also use
    :func:`make_guarded_transport`.
    """
    parsed = check_url(url)
    if not allow_private:
        await resolve_public(parsed.host, parsed.port, allow_private=False, resolver=resolver)
    return parsed.url


# --------------------------------------------------------------------------------------------
# Connect-time guard
# --------------------------------------------------------------------------------------------


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that only ever dials addresses it has just checked.

    ``connect_tcp(host, port)`` resolves ``host`` itself (:func:`resolve_public`), refuses with
    :class:`DestinationRefused` unless every address is public (or ``allow_private``), then
    dials the checked IP addresses in order through ``delegate`` (httpcore's anyio backend by
    default) until one connects, within one overall connect timeout. TLS is unaffected:
    httpcore calls ``stream.start_tls(server_hostname=<URL host>)`` with the origin's hostname,
    not the address passed here, so SNI and certificate checks use the real name, and the
    ``Host`` header comes from the request.
    """

    def __init__(
        self,
        allow_private: bool = False,
        *,
        delegate: httpcore.AsyncNetworkBackend | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.allow_private = allow_private
        self._delegate = delegate if delegate is not None else httpcore.AnyIOBackend()
        self._resolver = resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with anyio.fail_after(timeout):
                addresses = await resolve_public(
                    host, port, self.allow_private, resolver=self._resolver
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out resolving {host}") from None

        last_error: Exception | None = None
        for address in addresses:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise httpcore.ConnectTimeout(f"timed out connecting to {host}")
            try:
                return await self._delegate.connect_tcp(
                    address,
                    port,
                    timeout=remaining,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectTimeout:
                raise
            except httpcore.ConnectError as exc:
                # Try the next checked address (e.g. IPv6 unreachable, IPv4 fine).
                last_error = exc
        assert last_error is not None  # resolve_public never returns an empty list
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("unix sockets are not webhook destinations", reason="url")

    async def sleep(self, seconds: float) -> None:
        await self._delegate.sleep(seconds)


def _httpcore_to_httpx() -> tuple[tuple[type[Exception], type[httpx.HTTPError]], ...]:
    # Most specific first, mirroring httpx's own transport (httpx/_transports/default.py).
    return (
        (httpcore.ConnectTimeout, httpx.ConnectTimeout),
        (httpcore.ReadTimeout, httpx.ReadTimeout),
        (httpcore.WriteTimeout, httpx.WriteTimeout),
        (httpcore.PoolTimeout, httpx.PoolTimeout),
        (httpcore.TimeoutException, httpx.TimeoutException),
        (httpcore.ConnectError, httpx.ConnectError),
        (httpcore.ReadError, httpx.ReadError),
        (httpcore.WriteError, httpx.WriteError),
        (httpcore.NetworkError, httpx.NetworkError),
        (httpcore.ProxyError, httpx.ProxyError),
        (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
        (httpcore.LocalProtocolError, httpx.LocalProtocolError),
        (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
        (httpcore.ProtocolError, httpx.ProtocolError),
    )


_EXC_MAP = _httpcore_to_httpx()


def map_exception(exc: Exception, request: httpx.Request | None) -> Exception | None:
    if isinstance(exc, DestinationRefused):
        return DestinationRefusedError(exc, request)
    for source, target in _EXC_MAP:
        if isinstance(exc, source):
            return target(str(exc), request=request) if request is not None else target(str(exc))
    return None


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes], request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> typing.AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except Exception as exc:
            mapped = map_exception(exc, self._request)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """httpx transport over an httpcore pool whose every connection goes through
    :class:`GuardedBackend`. HTTP/1.1 only; no proxies (a proxy would do the dialling and
    bypass the guard). The webhook sender uses the leaner ``http1.Http1Pool`` over the same
    backend; this is the guard for code that wants an httpx client.

    Refusals raise :class:`DestinationRefusedError` (an ``httpx.ConnectError``); other httpcore
    errors are mapped to their httpx equivalents like httpx's own transport does.
    """

    def __init__(
        self,
        allow_private: bool = False,
        *,
        ssl_context: typing.Any = None,
        resolver: Resolver | None = None,
        delegate: httpcore.AsyncNetworkBackend | None = None,
        **pool_kwargs: typing.Any,
    ) -> None:
        for forbidden in ("proxy", "uds", "network_backend", "http1", "http2"):
            if forbidden in pool_kwargs:
                raise TypeError(f"{forbidden!r} cannot be set on a guarded transport")
        self.backend = GuardedBackend(allow_private, delegate=delegate, resolver=resolver)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context if ssl_context is not None else httpx.create_ssl_context(),
            network_backend=self.backend,
            http1=True,
            http2=False,
            **pool_kwargs,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core_request)
        except Exception as exc:
            mapped = map_exception(exc, request)
            if mapped is None:
                raise
            raise mapped from exc
        assert isinstance(response.stream, typing.AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream, request),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def make_guarded_transport(allow_private: bool, **pool_kwargs: typing.Any) -> GuardedTransport:
    """Transport for the webhook sender's ``httpx.AsyncClient``.

    ``pool_kwargs`` go to :class:`httpcore.AsyncConnectionPool` (``max_connections``,
    ``max_keepalive_connections``, ``keepalive_expiry``, ``retries``, ``local_address``,
    ``socket_options``) plus ``ssl_context``/``resolver``/``delegate`` for
    :class:`GuardedTransport`. Use it as ``httpx.AsyncClient(transport=..., follow_redirects=
    False)`` and pass no ``proxy``/``mounts`` (httpx ignores environment proxies when a
    transport is given).
    """
    return GuardedTransport(allow_private, **pool_kwargs)
