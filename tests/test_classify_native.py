"""The compiled classifier (`zeekndm._core.Classifier`, which the compiled dispatch asks
instead of the Python cache and `_classify`) gives `_classify`'s flags for every address
it decides, and decides every dotted quad and plain IPv6 address: on the edges of every
configured range, the special ranges, random addresses, IPv4-mapped IPv6 and odd strings,
for several configurations (external sub-ranges, drop, proxies, ranges of every length)."""

from __future__ import annotations

import ipaddress
import random

import pytest
from conftest import use_core

from zeekndm.detect import Detector
from zeekndm.models import load_builtin_models
from zeekndm.networks import _NEVER_EXTERNAL, NetworkClassifier

CONFIGS = {
    "default": {},
    "site": dict(
        internal_networks=("10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32", "fc00::/7"),
        external=("10.5.0.0/16", "10.5.7.0/24", "2001:db8:ff::/48"),
        drop=("10.9.0.0/16", "8.8.8.0/24", "2001:db8:dead::/48"),
        proxies=("10.1.1.1", "10.1.2.0/30", "2001:db8::1"),
    ),
    # an internal range inside an excluded one inside an internal one; a /0 and ::/0
    "nested": dict(
        internal_networks=("0.0.0.0/0", "172.20.5.0/24", "::/0"),
        external=("172.20.0.0/16", "203.0.113.0/24", "2001::/16"),
        drop=("127.0.0.0/8",),
        proxies=("0.0.0.0/0",),
    ),
    "many": dict(
        internal_networks=tuple(
            f"{ipaddress.IPv4Address(random.Random(7).getrandbits(32) >> s << s)}/{32 - s}"
            for s in range(0, 25)
        )
        + ("100.64.0.0/10",),
        external=("100.64.0.0/11",),
    ),
}


def edges(net: ipaddress._BaseNetwork) -> list[str]:
    first, last = int(net.network_address), int(net.broadcast_address)
    top = 2**32 - 1 if net.version == 4 else 2**128 - 1
    cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    out = [cls(v) for v in (first - 1, first, first + 1, last - 1, last, last + 1) if 0 <= v <= top]
    return [str(a) for a in out] + [a.exploded for a in out if net.version == 6]


def addresses(classifier: NetworkClassifier, rng: random.Random) -> list[str]:
    nets = [*classifier.internal, *classifier.external, *_NEVER_EXTERNAL]
    for table in (classifier._drop, classifier._proxies):
        for shift, found in table._v4:
            nets += [ipaddress.ip_network((k << shift, 32 - shift)) for k in found]
        for shift, found in table._v6:
            nets += [ipaddress.ip_network((k << shift, 128 - shift)) for k in found]
    out = [a for n in nets for a in edges(n)]
    out += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(3000)]
    out += [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(500)]
    out += [str(ipaddress.IPv6Address(rng.getrandbits(16) << 112)) for _ in range(200)]
    v4 = [a for a in out if "." in a and ":" not in a]
    out += [f"::ffff:{a}" for a in rng.sample(v4, 300)]
    out += [f"::{a}" for a in rng.sample(v4, 50)]
    out += [f"::FFFF:{a}" for a in rng.sample(v4, 50)]
    # odd strings: leading zeros, blanks, missing or extra parts, scope ids, non-ASCII
    odd = [
        "",
        "x",
        "-",
        "1.2.3",
        "1.2.3.4.5",
        "1.2.3.4.",
        ".1.2.3.4",
        "01.2.3.4",
        "1.2.3.04",
        "256.1.1.1",
        "1.2.3.255",
        " 1.2.3.4",
        "1.2.3.4 ",
        "1.2.3.4\n",
        "1..2.3",
        "0.0.0.0",
        "255.255.255.255",
        "::",
        ":::",
        "::1",
        "1::",
        ":1::",
        "1:2",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1:2:3:4::5:6:7:8",
        "1::2::3",
        "12345::",
        "fe80::1%eth0",
        "fe80::1%",
        "::ffff:1.2.3.04",
        "::ffff:1.2.3.4.5",
        "1:2:3:4:5:6:1.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4",
        "::1.2.3",
        "::/0",
        "10.0.0.0/8",
        "١.٢.٣.٤",
        "1.2.3.٤",
        "fe80::ｆ",
        "FE80::1",
        "fE80:0:0::1",
        "0x1.2.3.4",
        "1.2.3.4\x00",
        "::1\x00",
        "+1.2.3.4",
        "1.2.3.-4",
        "1e2.1.1.1",
    ]
    out += odd
    # mutations of good addresses: a character dropped, doubled or replaced
    alphabet = "0123456789abcdefABCDEF:.% x"
    for a in rng.sample(out, 1500):
        if not a:
            continue
        i = rng.randrange(len(a))
        out += [a[:i] + a[i + 1 :], a[:i] + a[i] + a[i:], a[:i] + rng.choice(alphabet) + a[i + 1 :]]
    return out


def python_flags(classifier: NetworkClassifier, addr: str):
    try:
        return classifier._classify(addr)
    except ValueError as exc:  # an embedded NUL: inet_pton refuses the string itself
        return exc


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_compiled_flags_are_classify_s_for_every_address(monkeypatch, name):
    use_core(monkeypatch, "native")
    kw = dict(CONFIGS[name])
    nets = kw.pop("internal_networks", None)
    classifier = NetworkClassifier(nets, **kw) if nets is not None else NetworkClassifier(**kw)
    compiled = classifier.compiled()
    assert classifier.compiled() is compiled  # built once
    decided = 0
    for addr in addresses(classifier, random.Random(name)):
        want = python_flags(classifier, addr)
        got = compiled.flags(addr)
        if got is None:
            # left to Python: only strings that are no plain address
            assert isinstance(want, ValueError) or want == 0 or "%" in addr, addr
            continue
        decided += 1
        assert got == want, (addr, got, want)
        try:
            parsed = ipaddress.ip_address(addr)
        except ValueError:
            continue
        assert got & 4, addr  # an address is VALID
        assert isinstance(parsed, ipaddress.IPv4Address | ipaddress.IPv6Address)
    assert decided > 4000
    # every dotted quad and plain IPv6 address is decided natively
    for addr in ("1.2.3.4", "10.0.0.1", "::1", "2001:db8::1", "::ffff:10.1.1.1"):
        assert compiled.flags(addr) is not None


def test_compiled_flags_follow_the_octet_shortcut_the_classifier_has():
    """The tables are the classifier's own: a classifier whose by-octet shortcut is off
    (as the prefix-table test switches it off) gets the full lookup, with equal answers."""
    pytest.importorskip("zeekndm._core")
    a = NetworkClassifier(**{k: v for k, v in CONFIGS["site"].items() if k != "internal_networks"})
    b = NetworkClassifier(**{k: v for k, v in CONFIGS["site"].items() if k != "internal_networks"})
    b._octets = [None] * 256
    rng = random.Random(1)
    for _ in range(5000):
        addr = str(ipaddress.IPv4Address(rng.getrandbits(32)))
        assert a.compiled().flags(addr) == b.compiled().flags(addr) == a._classify(addr)


def _flow(src: str, dst: str, ts: float, dport: int = 445):
    from zeekndm.flow import Flow, Outcome, Transport

    return Flow(ts, src, 40000, dst, dport, Transport.TCP, Outcome.REJECTED, None, None, None)


@pytest.mark.parametrize("how", ["set_models", "assign"])
def test_the_dispatch_uses_the_classifier_of_the_moment(core_path, how):
    models = [m for m in load_builtin_models().values() if m.enabled]
    det = Detector(models, NetworkClassifier())
    flows = [_flow("10.0.0.5", f"198.51.100.{i}", 1000.0 + i) for i in range(1, 50)]
    for f in flows[:10]:
        det.observe(f)
    before = det.stats.outbound
    assert before == 10
    # the sweeper's own segment is now dropped
    other = NetworkClassifier(drop=("10.0.0.0/24",))
    if how == "set_models":
        det.set_models(models, other)
    else:
        det.classifier = other
    for f in flows[10:]:
        det.observe(f)
    stats = det.stats
    assert stats.outbound == before
    assert stats.dropped == len(flows) - 10
