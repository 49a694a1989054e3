"""Who is on the other end: the TCP peer, or what a trusted proxy says in X-Forwarded-For.

`X-Forwarded-For` is a list any client can write into, so it is honoured only when the TCP
peer is one of `server.trusted_proxies`. Each proxy appends the address it received the
request from, so the chain is read from the right: the first address that is not a trusted
proxy is the client; everything left of it was written by that client and proves nothing.
If every hop is trusted, the left-most is the client. An entry that is not an IP address
ends the walk at the hop before it (the proxy that handed it over), so a forged or garbled
value is never taken for the client.

Used by the access log and the audit events; the rate limiter for unauthenticated requests
is meant to key on the same address. No I/O, no framework.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(values: Iterable[str]) -> tuple[_Network, ...]:
    """IPs and CIDRs ("10.0.0.1", "10.0.0.0/8", "::1"), or ValueError naming the bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR (e.g. 10.0.0.1 or 10.0.0.0/8)") from None
    return tuple(networks)


def _parse_hop(text: str) -> _Address | None:
    """One X-Forwarded-For entry: 1.2.3.4, 1.2.3.4:5678, 2001:db8::1 or [2001:db8::1]:5678."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddress:
    """Resolves the client address of a request. Without trusted proxies (the default) it
    is the TCP peer and costs nothing: the header is not even looked at."""

    __slots__ = ("networks", "enabled", "_trusted_cache")

    _CACHE_LIMIT = 4096

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.networks = parse_networks(trusted_proxies)
        self.enabled = bool(self.networks)
        self._trusted_cache: dict[str, bool] = {}

    def _trusted(self, address: _Address) -> bool:
        return any(address in network for network in self.networks)

    def _peer_trusted(self, peer: str) -> bool:
        # Few distinct peers (the proxies themselves) ask again and again: remember them.
        known = self._trusted_cache.get(peer)
        if known is None:
            address = _parse_hop(peer)
            known = address is not None and self._trusted(address)
            if len(self._trusted_cache) >= self._CACHE_LIMIT:
                self._trusted_cache.clear()
            self._trusted_cache[peer] = known
        return known

    def scheme(self, peer: str | None, forwarded_proto: bytes) -> str | None:
        """The scheme a trusted proxy says the client used (X-Forwarded-Proto: https when
        TLS ends at the proxy), or None: from anyone else the header proves nothing."""
        if peer is None or not self._peer_trusted(peer):
            return None
        proto = forwarded_proto.split(b",")[0].strip().lower()
        return proto.decode("ascii") if proto in (b"http", b"https") else None

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client address: `peer` (the TCP peer's host) unless it is a trusted proxy
        that sent `forwarded_for` (all X-Forwarded-For values, joined with commas)."""
        if not self.enabled or not forwarded_for or peer is None or not self._peer_trusted(peer):
            return peer
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            address = _parse_hop(hop)
            if address is None:
                break  # garbled: keep the proxy that handed it over
            client = str(address)
            if not self._trusted(address):
                break
        return client
