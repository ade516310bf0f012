"""The pure rules under the office login's limits: which address a request comes from, and how
long a key is blocked after its failures."""

from __future__ import annotations

import pytest

from central.client_address import client_address, parse_networks
from central.login_limits import delay_s

PROXIES = parse_networks(["10.0.0.0/8", "192.0.2.1", "2001:db8:ffff::/48"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        # Not from a trusted proxy: the header is the client's own and ignored.
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),
        # From a proxy: the address it appended (the rightmost) is the client.
        ("192.0.2.1", ["198.51.100.1"], "198.51.100.1"),
        # What the client wrote in front is not believed.
        ("192.0.2.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
        # Proxies behind proxies vouch for each other, from the right.
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1, 10.0.0.9"], "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6", "198.51.100.1", "10.0.0.9"], "198.51.100.1"),
        # A proxy that forwards nothing: the proxy itself.
        ("192.0.2.1", [], "192.0.2.1"),
        # Only proxies in the header: the leftmost of them.
        ("192.0.2.1", ["10.0.0.7, 10.0.0.8"], "10.0.0.7"),
        # Garbage where the proxy's entry should be: counted as the proxy.
        ("192.0.2.1", ["198.51.100.1, not-an-address"], "192.0.2.1"),
        # Ports and brackets as some proxies write them.
        ("192.0.2.1", ["198.51.100.1:5123"], "198.51.100.1"),
        ("192.0.2.1", ["[2001:db8:1:2::5]:443"], "2001:db8:1:2::/64"),
        # IPv6 clients count per /64; IPv4 in IPv6 is IPv4.
        ("2001:db8:1:2:aaaa::1", [], "2001:db8:1:2::/64"),
        ("2001:db8:ffff::1", ["2001:db8:7:7::1"], "2001:db8:7:7::/64"),
        ("::ffff:203.0.113.5", [], "203.0.113.5"),
        # No peer at all (a Unix socket).
        (None, ["198.51.100.1"], "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded_for: list[str], expected: str) -> None:
    assert client_address(peer, forwarded_for, PROXIES) == expected


def test_without_trusted_proxies_the_header_never_counts() -> None:
    assert client_address("127.0.0.1", ["198.51.100.1"], ()) == "127.0.0.1"


def test_delays_grow_after_the_free_failures_up_to_the_cap() -> None:
    assert [delay_s(n, 5, 300) for n in range(1, 16)] == [
        *[0] * 5,
        *[1, 2, 4, 8, 16, 32, 64, 128, 256, 300],
    ]
    assert delay_s(10_000, 5, 300) == 300
    assert delay_s(1, 0, 10) == 1
