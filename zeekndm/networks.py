"""Which addresses are ours: internal-network classification, cached per address.

"Outbound" means an internal source talking to an external destination. Internal is
what the user says (`internal_networks`, default RFC 1918 + RFC 6598 + fc00::/7), since
sites with public internal space exist (universities, and the real captures in
../shared/data/real show several). Beside the internal ranges a site can name, as
Netography and Vectra let it:

- `external`: sub-ranges of the internal space counted as external (a DMZ inside 10/8);
  the most specific range wins, so an internal range inside an excluded one is internal;
- `drop`: ranges whose records are ignored altogether (a lab, a scanner's own segment);
- `proxies`: NAT gateways and egress proxies: their connections are the sum of many
  clients', so they are never a scan's source.

Loopback, link-local, multicast, broadcast and "this network" addresses are never
external targets: traffic to them is not scanning the internet.

Lookups go through a prefix table (one hash probe per distinct prefix length in use),
so 20,000 configured networks cost what 5 do; each address's answer is cached.
IPv4-mapped IPv6 addresses (`::ffff:10.0.0.5`) are classified as their IPv4 address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
DEFAULT_INTERNAL = PRIVATE_RANGES

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

# bit flags of one address's answer (the cache holds these)
VALID = 4
INTERNAL = 1
SPECIAL = 2
DROP = 8
PROXY = 16
EXCLUDED = 32  # inside an `external` sub-range: external whatever Zeek's local fields say


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """What the config says about the site's address space (`internal_networks`)."""

    networks: tuple[str, ...] = ()
    private_is_internal: bool = True
    external: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    proxies: tuple[str, ...] = ()

    @property
    def internal(self) -> tuple[str, ...]:
        """Every range counted as internal (the private ranges when the switch is on)."""
        extra = tuple(n for n in PRIVATE_RANGES if n not in self.networks)
        return self.networks + (extra if self.private_is_internal else ())


class PrefixTable:
    """Longest-prefix match over IPv4 and IPv6 networks, each carrying a value.

    One dict per (version, prefix length): a lookup probes each length in use, longest
    first, so its cost depends on how many distinct lengths there are (at most 33 or
    129), never on how many networks.
    """

    __slots__ = ("_v4", "_v6", "_v4_get", "_v6_get")

    def __init__(self, entries: Iterable[tuple[ipaddress._BaseNetwork, object]] = ()) -> None:
        v4: dict[int, dict[int, object]] = {}
        v6: dict[int, dict[int, object]] = {}
        for net, value in entries:
            table, bits = (v4, 32) if net.version == 4 else (v6, 128)
            shift = bits - net.prefixlen
            table.setdefault(shift, {})[int(net.network_address) >> shift] = value
        # smallest shift first = longest prefix first
        self._v4 = tuple(sorted(v4.items()))
        self._v6 = tuple(sorted(v6.items()))
        self._v4_get = tuple((shift, nets.get) for shift, nets in self._v4)
        self._v6_get = tuple((shift, nets.get) for shift, nets in self._v6)

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)

    def lookup(self, value: int, version: int, default: object = None) -> object:
        for shift, get in self._v4_get if version == 4 else self._v6_get:
            hit = get(value >> shift)
            if hit is not None:
                return hit
        return default


def _nets(values: Iterable[str | ipaddress._BaseNetwork]) -> list[ipaddress._BaseNetwork]:
    return [ipaddress.ip_network(n, strict=False) for n in values]


_SPECIAL_TABLE = PrefixTable((n, True) for n in _NEVER_EXTERNAL)
_pton = socket.inet_pton
_AF_INET = socket.AF_INET


def address_value(addr: str) -> tuple[int, int] | None:
    """(integer value, IP version) of an address string; IPv4-mapped IPv6 as IPv4."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big"), 4
    except OSError:
        pass
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return int(ip.ipv4_mapped), 4
    return int(ip), ip.version


class NetworkClassifier:
    """Answers is_internal / is_external_target / drop / proxy per address string."""

    def __init__(
        self,
        internal_networks: Iterable[str | ipaddress._BaseNetwork] = DEFAULT_INTERNAL,
        *,
        external: Iterable[str] = (),
        drop: Iterable[str] = (),
        proxies: Iterable[str] = (),
    ):
        self.internal = tuple(_nets(internal_networks))
        self.external = tuple(_nets(external))
        # the most specific range decides: True internal, False counted as external
        self._table = PrefixTable(
            [(n, False) for n in self.external] + [(n, True) for n in self.internal]
        )
        self._drop = PrefixTable((n, True) for n in _nets(drop))
        self._proxies = PrefixTable((n, True) for n in _nets(proxies))
        self._has_drop = bool(self._drop)
        self._has_proxies = bool(self._proxies)
        self._cache: dict[str, int] = {}
        self._compiled: object = None  # `compiled()`, built on first use
        # IPv4 by first octet: where no range longer than /8 starts inside an octet's
        # /8, every address in it has the same answer, found with one index (a sweep
        # asks about a new address per record)
        longer = {
            int(n.network_address) >> 24
            for n in (
                *self.internal,
                *self.external,
                *_nets(drop),
                *_nets(proxies),
                *_NEVER_EXTERNAL,
            )
            if n.version == 4 and n.prefixlen > 8
        }
        self._octets: list[int | None] = [None] * 256
        for octet in range(256):
            if octet not in longer:
                self._octets[octet] = self._lookup(octet << 24, 4)

    @classmethod
    def from_settings(cls, settings: NetworkSettings) -> "NetworkClassifier":
        return cls(
            settings.internal,
            external=settings.external,
            drop=settings.drop,
            proxies=settings.proxies,
        )

    def compiled(self) -> object:
        """These tables for the compiled dispatch (`zeekndm._core.Classifier`: the
        by-octet shortcut and the four prefix tables as they are, so its answers are
        `_classify`'s), built once; the compiled dispatch asks for it."""
        if self._compiled is None:
            from zeekndm import _core

            tables = (self._table, _SPECIAL_TABLE, self._drop, self._proxies)
            self._compiled = _core.Classifier(
                list(self._octets),
                [[(shift, dict(nets)) for shift, nets in t._v4] for t in tables],
                [[(shift, dict(nets)) for shift, nets in t._v6] for t in tables],
            )
        return self._compiled

    def flags(self, addr: str) -> int:
        """The cached bit set of one address (0: not an address)."""
        flags = self._cache.get(addr)
        if flags is None:
            flags = self._classify(addr)
        return flags

    def _classify(self, addr: str) -> int:
        try:  # IPv4, the usual case, without building an address object
            packed = _pton(_AF_INET, addr)
        except OSError:
            parsed = address_value(addr)
            if parsed is None:
                return 0
            flags = self._lookup(*parsed)
        else:
            flags = self._octets[packed[0]]
            if flags is None:
                flags = self._lookup(int.from_bytes(packed, "big"), 4)
        cache = self._cache
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[addr] = flags
        return flags

    def _lookup(self, value: int, version: int) -> int:
        """The flags of one address given as (integer, IP version)."""
        flags = VALID
        verdict = self._table.lookup(value, version)
        if verdict:
            flags |= INTERNAL
        elif verdict is False:
            flags |= EXCLUDED
        if _SPECIAL_TABLE.lookup(value, version):
            flags |= SPECIAL
        if self._has_drop and self._drop.lookup(value, version):
            flags |= DROP
        if self._has_proxies and self._proxies.lookup(value, version):
            flags |= PROXY
        return flags

    def is_internal(self, addr: str) -> bool:
        return bool(self.flags(addr) & INTERNAL)

    def is_special(self, addr: str) -> bool:
        flags = self.flags(addr)
        return bool(flags & SPECIAL) or not flags

    def is_external_target(self, addr: str) -> bool:
        return self.flags(addr) & (VALID | INTERNAL | SPECIAL) == VALID

    def is_dropped(self, addr: str) -> bool:
        return bool(self.flags(addr) & DROP)

    def is_proxy(self, addr: str) -> bool:
        return bool(self.flags(addr) & PROXY)
