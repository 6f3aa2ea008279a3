"""A Kafka input for live mode: scale-out by consumer group, exactly once.

- `spec`      the input's definition (`type: kafka`, `kafka://...`) and client config
- `keys`      the partitioners (murmur2, crc32, fnv1a) and the check that a topic is keyed
              by source address
- `records`   one partition's parsers (Zeek JSON, zeek-kafka's tagged JSON, eve, TSV lines)
- `state`     per-partition detector state in a compacted topic
- `consumer`  `KafkaRunner`: the group member's loop, rebalances, transactional commits
- `rekey`     `zeekndm rekey`: an unkeyed topic to one keyed by source, exactly once
"""

from __future__ import annotations

from typing import Any

from zeekndm.errors import ZeekNDMError

__all__ = ["kafka_runner"]


def kafka_runner(specs: list[Any], args: Any, config: Any, env: Any) -> Any:
    """The runner for `zeekndm run` when its inputs are a Kafka input."""
    kafka = [s for s in specs if s.type == "kafka"]
    if len(kafka) != len(specs):
        raise ZeekNDMError(
            "a kafka input cannot be combined with file or socket inputs in one zeekndm run "
            "(their positions are committed differently): run one instance for each"
        )
    if len(kafka) > 1:
        raise ZeekNDMError(
            "one kafka input per zeekndm run: list several topics in it (topics: [...]) or "
            "run one instance per cluster"
        )
    from zeekndm.live.kafka.consumer import KafkaRunner

    return KafkaRunner(
        config,
        kafka[0],
        output=getattr(args, "output", None),
        elasticsearch_url=getattr(args, "elasticsearch", None),
        state_dir=getattr(args, "state_dir", None),
        stdout=env.stdout_bytes,
        models_spec=getattr(args, "models", None),
    )
