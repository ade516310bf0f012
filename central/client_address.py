"""The address of an office client, as the login limits count it.

Behind a reverse proxy every request comes from the proxy; the client is the address the proxy
appended to ``X-Forwarded-For``.  Anybody can send that header, so it is believed only from the
configured ``trusted_proxies``, and read from the right: each trusted hop vouches for the hop
before it, and the first address that is not a trusted proxy is the client.  Entries further left
were written by the client itself and are never believed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: The address of a client that has none (a Unix socket, an unparsable peer).
UNKNOWN = "unknown"
#: IPv6 clients are counted per /64: one subscriber usually holds a whole /64, so counting
#: single addresses would give them 2**64 fresh ones.
IPV6_PREFIX = 64
ADDRESS_CHARS_MAX = 64


def parse_networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    """The trusted proxies of the configuration as networks (``10.0.0.1`` is ``10.0.0.1/32``)."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _parse(text: str) -> IPAddress | None:
    value = text.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "203.0.113.7:51234"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], proxies: Sequence[IPNetwork]
) -> str:
    """The client's address as the login limits key it.

    ``peer`` is the TCP peer, ``forwarded_for`` the ``X-Forwarded-For`` headers in order (each may
    hold a comma-separated list), ``proxies`` the trusted ones.  An IPv6 client is its /64.
    """
    address = _parse(peer) if peer else None
    if address is None:
        return UNKNOWN
    if _trusted(address, proxies):
        hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            forwarded = _parse(hop)
            if forwarded is None:
                # A trusted proxy wrote something that is no address: stop at that proxy.
                break
            address = forwarded
            if not _trusted(forwarded, proxies):
                break
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)[:ADDRESS_CHARS_MAX]
