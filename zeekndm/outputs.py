"""Build the alert sinks a command writes to, from the config and command-line overrides.

Shared by `replay` and `run` (live mode), so both honour the same `output:` section and
the same `--output` / `--elasticsearch` switches.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from zeekndm.config import Config
from zeekndm.statedir import DEFAULT_STATE_DIR

log = logging.getLogger(__name__)


def state_dir_for(config: Config, override: str | None = None) -> Path:
    """The directory for registry, snapshots, spool and dead letters."""
    return Path(override or config.state_dir or DEFAULT_STATE_DIR)


def elasticsearch_settings(config: Config, url: str | None = None) -> Any:
    """`output.elasticsearch`, with `url` (from `--elasticsearch`) replacing its hosts
    (and its cloud_id). The URL is checked as `hosts:` entries are: no credentials in it."""
    es = config.elasticsearch
    if url:
        from zeekndm.sinks.elasticsearch import ElasticsearchSettings, check_url

        check_url(url, "--elasticsearch")
        es = (
            replace(es, hosts=[url], cloud_id=None)
            if es is not None
            else ElasticsearchSettings.from_dict({"hosts": [url]})
        )
    return es


def build_sinks(
    config: Config,
    state_dir: Path,
    *,
    output: str | None = None,
    elasticsearch_url: str | None = None,
    stdout: IO[bytes] | None = None,
    allow_unreachable: bool = False,
) -> list[Any]:
    """The sinks to write to: NDJSON (a file, or `stdout` for "-") and Elasticsearch.

    `output` overrides `output.ndjson.path`; "-" means `stdout` (ignored when `stdout` is
    None). `elasticsearch_url` adds or overrides the cluster of `output.elasticsearch`.
    The Elasticsearch sink is checked at once, so an unreachable cluster fails here with
    one line, as does an unsupported server; with `allow_unreachable` (live mode) an
    unreachable cluster is only a warning and alerts are spooled until it is back.
    """
    from zeekndm.sinks.ndjson import NDJSONSink

    sinks: list[Any] = []
    path = output if output is not None else config.ndjson_path
    if path == "-":
        if stdout is not None:
            sinks.append(NDJSONSink(stream=stdout))
    elif path:
        sinks.append(NDJSONSink(path))
    es = elasticsearch_settings(config, elasticsearch_url)
    if es is not None:
        from zeekndm.sinks.elasticsearch import ElasticsearchSink

        sink = ElasticsearchSink(es, state_dir)
        try:
            ok = sink.check(allow_unreachable=allow_unreachable)
            if ok:
                log.info("%s", ok)
        except BaseException:
            for s in sinks + [sink]:
                s.close()
            raise
        sinks.append(sink)
    return sinks
