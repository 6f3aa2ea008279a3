"""Which addresses are ours: internal-network classification, cached per address.

"Outbound" means an internal source talking to an external destination. Internal is
what the user says (`internal_networks`, default RFC 1918 + RFC 6598 + fc00::/7), since
sites with public internal space exist (universities, and the real captures in
../shared/data/real show several). Loopback, link-local, multicast, broadcast and
"this network" addresses are never external targets: traffic to them is not scanning
the internet.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

DEFAULT_INTERNAL = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")

_NEVER_EXTERNAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", includes 0.0.0.0
        "127.0.0.0/8",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "fe80::/10",
        "ff00::/8",
    )
)

_CACHE_LIMIT = 200_000


def _v4_masks(nets: Iterable[ipaddress._BaseNetwork]) -> tuple[tuple[int, int], ...]:
    """(network, netmask) integer pairs: the IPv4 test without building address objects,
    which matters when most addresses are new (a scan of the whole internet)."""
    return tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == 4)


_NEVER_EXTERNAL_V4 = _v4_masks(_NEVER_EXTERNAL)


class NetworkClassifier:
    """Answers is_internal / is_external_target per address string, with a bounded cache."""

    def __init__(
        self, internal_networks: Iterable[str | ipaddress._BaseNetwork] = DEFAULT_INTERNAL
    ):
        self.internal = tuple(ipaddress.ip_network(n, strict=False) for n in internal_networks)
        self._internal_v4 = tuple(n for n in self.internal if n.version == 4)
        self._internal_v6 = tuple(n for n in self.internal if n.version == 6)
        self._masks_v4 = _v4_masks(self._internal_v4)
        self._cache: dict[str, int] = {}

    # bit flags in the cache: 1 = internal, 2 = never external (special), 4 = valid
    def _classify(self, addr: str) -> int:
        try:
            value = int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")
        except OSError:
            value = None
        flags = 4
        if value is not None:
            for net, mask in self._masks_v4:
                if value & mask == net:
                    flags |= 1
                    break
            for net, mask in _NEVER_EXTERNAL_V4:
                if value & mask == net:
                    flags |= 2
                    break
        else:
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                return 0
            nets = self._internal_v4 if ip.version == 4 else self._internal_v6
            if any(ip in n for n in nets):
                flags |= 1
            if any(ip.version == n.version and ip in n for n in _NEVER_EXTERNAL):
                flags |= 2
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[addr] = flags
        return flags

    def is_internal(self, addr: str) -> bool:
        flags = self._cache.get(addr)
        if flags is None:
            flags = self._classify(addr)
        return bool(flags & 1)

    def is_special(self, addr: str) -> bool:
        flags = self._cache.get(addr)
        if flags is None:
            flags = self._classify(addr)
        return bool(flags & 2) or not flags

    def is_external_target(self, addr: str) -> bool:
        flags = self._cache.get(addr)
        if flags is None:
            flags = self._classify(addr)
        return flags == 4
