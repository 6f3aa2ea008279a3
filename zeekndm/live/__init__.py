"""Live mode (`zeekndm run`): follow a sensor's logs and detect as records arrive.

The package has the shape of Filebeat's input side, one concept per module:

- `inputs`   input definitions from the config and `--input`
- `listen`   Suricata unix_dgram / unix_stream listeners
- `follow/`  files through rotation: scan, identity, harvester, positions, resume, watch,
             follower
- `registry` the registry file and the live state it holds (versioned)
- `streams`  per-file parser opening and feeding, rate-limited bad-line accounting
- `runner`   the run loop: setup, commit, signals, reload, stats
- `kafka/`   a Kafka input: a consumer group member committing offsets and per-partition
             detector state in Kafka transactions (its own loop), and `zeekndm rekey`

`run_live` is the public entry; `cli` calls it.
"""

from __future__ import annotations

from typing import Any

from zeekndm.config import Config
from zeekndm.live.runner import LiveRunner

__all__ = ["LiveRunner", "run_live"]


def run_live(args: Any, config: Config, env: Any) -> int:
    """The `run` command: returns the exit status."""
    from zeekndm.live.inputs import input_from_arg

    specs = list(config.inputs) + [input_from_arg(a) for a in getattr(args, "input", None) or []]
    if any(s.type == "kafka" for s in specs):
        from zeekndm.live.kafka import kafka_runner

        return kafka_runner(specs, args, config, env).run()
    runner = LiveRunner(
        config,
        inputs=list(getattr(args, "input", None) or []),
        output=getattr(args, "output", None),
        elasticsearch_url=getattr(args, "elasticsearch", None),
        state_dir=getattr(args, "state_dir", None),
        stdout=env.stdout_bytes,
        models_spec=getattr(args, "models", None),
    )
    return runner.run()
