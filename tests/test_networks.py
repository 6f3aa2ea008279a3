"""Internal/external classification agrees with the `ipaddress` module's answer."""

from __future__ import annotations

import ipaddress
import random

import pytest

from zeekndm.networks import _NEVER_EXTERNAL, NetworkClassifier

CONFIGS = [
    ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"),
    ("128.32.0.0/16", "2607:f140::/32", "198.51.100.128/25"),  # a site with public space
]


@pytest.mark.parametrize("networks", CONFIGS)
def test_classification_matches_ipaddress_reference(networks):
    c = NetworkClassifier(networks)
    nets = [ipaddress.ip_network(n) for n in networks]
    rng = random.Random(1)
    edges = [
        "0.0.0.0",
        "127.0.0.1",
        "169.254.3.4",
        "224.0.0.251",
        "255.255.255.255",
        "172.15.255.255",
        "172.16.0.0",
        "172.31.255.255",
        "172.32.0.0",
        "128.32.9.9",
        "198.51.100.127",
        "198.51.100.128",
        "::1",
        "fe80::1",
        "ff02::1",
        "fd12::1",
        "2607:f140::5",
        "2001:db8::1",
    ]
    addrs = edges + [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(5000)]
    for a in addrs:
        ip = ipaddress.ip_address(a)
        internal = any(ip.version == n.version and ip in n for n in nets)
        special = any(ip.version == n.version and ip in n for n in _NEVER_EXTERNAL)
        assert c.is_internal(a) == internal, a
        assert c.is_special(a) == special, a
        assert c.is_external_target(a) == (not internal and not special), a


def test_garbage_is_neither_internal_nor_a_target():
    c = NetworkClassifier()
    for a in ("", "10.0.0", "999.1.1.1", "not-an-ip"):
        assert not c.is_internal(a) and not c.is_external_target(a) and c.is_special(a)
