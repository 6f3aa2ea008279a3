"""Alerts of whole replays, for comparing two detectors (or two cores) on the same inputs.

`INPUTS` names every real capture (by reference, under ../shared/data/real) and the
benchmark's synthetic inputs (generated here, small); `replay_alerts(path, models)` runs
`zeekndm replay` in-process and returns one compact row per alert. The rows of the
detector before issue 15 are kept in `tests/data/alerts_before_issue15.json.gz`
(`python tests/golden.py write`), so `test_speed.py` can say which alerts changed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GOLDEN = HERE / "data" / "alerts_before_issue15.json.gz"

#: Real captures, relative to ../shared/data/real. Directories replay as `replay DIR`.
REAL_INPUTS = (
    "suricata/elastic-beats/eve-small.log",
    "suricata/slips/test6-malicious.suricata.json",
    "suricata/suricatalog/eve-2.json",
    "suricata/suricatalog/eve_udp_flow.json",
    "suricata/tenzir/eve.json",
    "zeek/brimdata-zed/conn.log",
    "zeek/elastic-beats/conn.log",
    "zeek/elastic-beats/connection-json.log",
    "zeek/rita/json_with_all_fields/conn.log",
    "zeek/rita/missing_host_2024-04-19",
    "zeek/rita/proxy_rolling/conn.16_00_00-17_00_00.log.gz",
    "zeek/slips/port-scans/horizontal/conn.log",
    "zeek/slips/port-scans/vertical/conn.log",
    "zeek/slips/test10-mixed-zeek-dir/conn.log",
    "zeek/slips/test18-malicious-ctu-sme-11-win/zeek-labeled/conn.log.labeled",
    "zeek/slips/test9-mixed-zeek-dir/conn.log",
    "zeek/stratosphere-sdt/002-zeek-scenario-port-scanning/conn.log",
    "zeek/stratosphere-sdt/011-zeek-mixed/data/conn.log.labeled",
    "zeek/zat/conn.log",
    "zeek/zat/json/conn.log",
)
#: Synthetic inputs: name -> (generator in bench/bench_replay.py, arguments, writer).
SYNTH_INPUTS = {
    "synth/mixed.conn.log": ("mixed_traffic", (20_000,), "write_zeek_tsv"),
    "synth/mixed.eve.json": ("mixed_traffic", (20_000,), "write_eve"),
    "synth/storm-1x100.conn.log": ("storm_traffic", (10_000, 1, 1.0), "write_zeek_tsv"),
    "synth/storm-500x50.conn.log": ("storm_traffic", (30_000, 500, 0.5), "write_zeek_tsv"),
    "synth/growth-5000.conn.log": ("growth_traffic", (20_000, 5000), "write_zeek_tsv"),
}
#: The model selections compared: the defaults, and every shipped model.
MODEL_SETS = (None, "all")


def real_data() -> Path:
    return Path(os.environ.get("ZEEKNDM_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


def synth_input(name: str, directory: Path) -> Path:
    """Write (once) one synthetic input into `directory`."""
    sys.path.insert(0, str(REPO / "bench"))
    import bench_replay

    from zeekndm import synth

    path = directory / name.replace("/", "-")
    if not path.exists():
        generator, args, writer = SYNTH_INPUTS[name]
        with open(path, "w") as out:
            getattr(synth, writer)(getattr(bench_replay, generator)(*args), out)
    return path


def replay_alerts(path: Path, models: str | None = None) -> list[list]:
    """[alert id, model, state, severity, source, target, distinct, first_seen, last_seen,
    digest of the whole `zeekndm` evidence] per alert of `zeekndm replay PATH`, in output
    order."""
    from zeekndm.cli import Environment, main

    out = io.StringIO()
    argv = ["replay", str(path), "-o", "-"]
    if models:
        argv += ["--models", models]
    env = Environment(stdout=out, stderr=io.StringIO())
    status = main(argv, env)
    if status != 0:
        raise RuntimeError(f"replay {path} exited {status}: {env.stderr.getvalue()}")
    rows = []
    for line in out.getvalue().splitlines():
        a = json.loads(line)
        z = a["zeekndm"]
        evidence = json.dumps(z, sort_keys=True).encode()
        rows.append(
            [
                a["event"]["id"],
                a["rule"]["name"],
                z["alert_state"],
                z["severity_name"],
                a.get("source", {}).get("ip"),
                z.get("target"),
                z["distinct_destinations"],
                z["first_seen"],
                z["last_seen"],
                hashlib.sha1(evidence).hexdigest()[:16],
            ]
        )
    return rows


def all_alerts(tmp: Path) -> dict[str, list[list]]:
    """`"<input>|<models>"` -> rows, over every input present and every model set."""
    result = {}
    base = real_data()
    paths = [(name, base / name) for name in REAL_INPUTS if (base / name).exists()]
    paths += [(name, synth_input(name, tmp)) for name in SYNTH_INPUTS]
    for name, path in paths:
        for models in MODEL_SETS:
            result[f"{name}|{models or 'default'}"] = replay_alerts(path, models)
    return result


def load_golden() -> dict[str, list[list]]:
    with gzip.open(GOLDEN, "rt") as f:
        return json.load(f)


if __name__ == "__main__" and sys.argv[1:] == ["write"]:  # pragma: no cover
    import tempfile

    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        data = all_alerts(Path(tmp))
    with gzip.open(GOLDEN, "wt") as f:
        json.dump(data, f, separators=(",", ":"), sort_keys=True)
    print(f"{GOLDEN}: {sum(len(v) for v in data.values())} alerts over {len(data)} runs")
