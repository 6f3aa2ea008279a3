"""Build the alert sinks a command writes to, from the config and command-line overrides.

Shared by `replay` and `run` (live mode), so both honour the same `output:` section and
the same `--output` / `--elasticsearch` / `--opensearch` switches.
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
    if not url:  # the sink module is imported only when a cluster is named
        return config.elasticsearch
    from zeekndm.sinks.elasticsearch import ElasticsearchSettings

    return _with_url(config.elasticsearch, ElasticsearchSettings, url, "--elasticsearch",
                     cloud_id=None)  # fmt: skip


def opensearch_settings(config: Config, url: str | None = None) -> Any:
    """`output.opensearch`, with `url` (from `--opensearch`) replacing its hosts."""
    if not url:
        return config.opensearch
    from zeekndm.sinks.opensearch import OpenSearchSettings

    return _with_url(config.opensearch, OpenSearchSettings, url, "--opensearch")


def _with_url(settings: Any, cls: Any, url: str | None, flag: str, **cleared: Any) -> Any:
    if not url:
        return settings
    from zeekndm.sinks.datastream import check_url

    check_url(url, flag, cls.WHERE_SECRETS_GO)
    if settings is None:
        return cls.from_dict({"hosts": [url]})
    return replace(settings, hosts=[url], **cleared)


def build_sinks(
    config: Config,
    state_dir: Path,
    *,
    output: str | None = None,
    elasticsearch_url: str | None = None,
    opensearch_url: str | None = None,
    stdout: IO[bytes] | None = None,
    allow_unreachable: bool = False,
) -> list[Any]:
    """The sinks to write to: NDJSON (a file, or `stdout` for "-"), Elasticsearch and
    OpenSearch.

    `output` overrides `output.ndjson.path`; "-" means `stdout` (ignored when `stdout` is
    None). `elasticsearch_url` (`opensearch_url`) adds or overrides the cluster of
    `output.elasticsearch` (`output.opensearch`). Each cluster sink is checked at once, so
    an unreachable cluster fails here with one line, as does an unsupported server; with
    `allow_unreachable` (live mode) an unreachable cluster is only a warning and alerts
    are spooled until it is back.
    """
    from zeekndm.sinks.ndjson import NDJSONSink

    sinks: list[Any] = []
    path = output if output is not None else config.ndjson_path
    if path == "-":
        if stdout is not None:
            sinks.append(NDJSONSink(stream=stdout))
    elif path:
        sinks.append(NDJSONSink(path))
    stores = []
    es = elasticsearch_settings(config, elasticsearch_url)
    if es is not None:
        from zeekndm.sinks.elasticsearch import ElasticsearchSink

        stores.append((ElasticsearchSink, es))
    opensearch = opensearch_settings(config, opensearch_url)
    if opensearch is not None:
        from zeekndm.sinks.opensearch import OpenSearchSink

        stores.append((OpenSearchSink, opensearch))
    try:
        for sink_class, settings in stores:
            sink = sink_class(settings, state_dir)
            sinks.append(sink)
            ok = sink.check(allow_unreachable=allow_unreachable)
            if ok:
                log.info("%s", ok)
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks
