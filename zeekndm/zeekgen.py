"""Renders the Zeek package's model defaults from the built-in model definitions.

The Zeek scripts in `zeek_scripts/` and the Python detector must agree on ports,
thresholds, window and allowlists; keeping them in one place (the model YAML) makes
drift impossible to miss. This module writes `zeek_scripts/models_defaults.zeek`, one
block of `&redef` constants per built-in model the package implements (a model marked
`python_only: true` is detected by zeekndm alone); a test regenerates it and fails when
the committed file differs.

    python -m zeekndm.zeekgen > zeek_scripts/models_defaults.zeek   # regenerate
    python -m zeekndm.zeekgen --check zeek_scripts/models_defaults.zeek
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from zeekndm.models import Model, Network, load_builtin_models

REGENERATE = "python -m zeekndm.zeekgen > zeek_scripts/models_defaults.zeek"

HEADER = f"""\
##! Detection model defaults for ZeekNDM, GENERATED from zeekndm/builtin_models/*.yaml
##! by ``{REGENERATE}``.
##! Do not edit: redef a constant from local.zeek (for example
##! ``redef ZeekNDM::mongodb_scan_internal_external_low = 50;``), or change the model
##! in zeekndm and regenerate, so the Zeek package and the Python detector agree.

module ZeekNDM;

export {{
"""


def zeek_ports(model: Model) -> list[str]:
    """Every watched port as a Zeek port literal (ranges expanded), in model order."""
    out: list[str] = []
    for transport, number in model.port_keys():
        literal = f"{number}/{transport}"
        if literal not in out:
            out.append(literal)
    return out


def zeek_subnet(network: Network) -> str:
    """A network as a Zeek subnet literal (IPv6 addresses go in brackets)."""
    if isinstance(network, ipaddress.IPv6Network):
        return f"[{network.network_address.compressed}]/{network.prefixlen}"
    return str(network)


def zeek_interval(seconds: float) -> str:
    value = int(seconds) if float(seconds).is_integer() else seconds
    return f"{value}secs"


def _set(items: Iterable[str]) -> str:
    items = list(items)
    return "{ " + ", ".join(items) + " }" if items else "{ }"


def render_model(model: Model) -> list[str]:
    """The export-block lines for one model (tab-indented, as zeek-format writes them)."""
    n = model.name
    lines = [
        f"\t## {n}: responder ports watched ({', '.join(str(p) for p in model.ports)}),",
        "\t## port ranges expanded.",
        f"\tconst {n}_ports: set[port] = {_set(zeek_ports(model))} &redef;",
    ]
    for severity, count in model.threshold.levels:
        lines += [
            f"\t## {n}: distinct external responders in the window for a {severity}",
            "\t## severity notice.",
            f"\tconst {n}_{severity} = {count} &redef;",
        ]
    lines += [
        f"\t## {n}: counting window (one SumStats epoch).",
        f"\tconst {n}_window = {zeek_interval(model.threshold.window)} &redef;",
        f"\t## {n}: originators never counted (authorised scanners).",
        f"\tconst {n}_ignore_sources: set[subnet] = "
        f"{_set(zeek_subnet(s) for s in model.discard_sources)} &redef;",
        f"\t## {n}: responders never counted.",
        f"\tconst {n}_ignore_destinations: set[subnet] = "
        f"{_set(zeek_subnet(d) for d in model.discard_destinations)} &redef;",
    ]
    return lines


def zeek_models(models: Mapping[str, Model]) -> dict[str, Model]:
    """The models the Zeek package implements: all but those marked `python_only`."""
    return {name: m for name, m in models.items() if not m.python_only}


def render(models: Mapping[str, Model]) -> str:
    """The whole generated .zeek file for `models` (sorted by name; models marked
    `python_only` are left out), zeek-formatted."""
    models = zeek_models(models)
    blocks = [render_model(models[name]) for name in sorted(models)]
    body = "\n\n".join("\n".join(block) for block in blocks)
    return zeek_format(HEADER + body + "\n}\n")


def zeek_format(text: str) -> str:
    """`text` as `zeek-format` writes it, so the generated file passes the format check.

    Line wrapping is left to the formatter rather than imitated here. It needs the
    `zeekscript` package (a test dependency): generating is a developer task.
    """
    try:
        import zeekscript
    except ImportError:  # pragma: no cover - depends on the environment
        raise SystemExit("zeekgen needs zeekscript: pip install zeekscript") from None
    script = zeekscript.Script(io.BytesIO(text.encode()))
    if not script.parse():
        line, lineno, msg = script.get_error()
        raise ValueError(f"generated Zeek does not parse: {msg} (line {lineno}: {line})")
    out = io.BytesIO()
    script.format(out)
    return out.getvalue().decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zeekndm.zeekgen",
        description="Print zeek_scripts/models_defaults.zeek from the built-in models.",
    )
    parser.add_argument(
        "--check",
        metavar="FILE",
        help="exit 1 if FILE differs from what would be generated (for CI)",
    )
    args = parser.parse_args(argv)
    text = render(load_builtin_models())
    if args.check:
        path = Path(args.check)
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            sys.stderr.write(f"{path} is stale; regenerate it with: {REGENERATE}\n")
            return 1
        sys.stderr.write(f"{path} is up to date\n")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
