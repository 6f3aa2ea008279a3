"""`zeekndm setup` and `zeekndm export`: what Elasticsearch and Kibana need, as Filebeat does.

Why generated in code: the assets must ship with `pip install` and follow the alert
document (`zeekndm.enrich`) field for field; the copies under config/elasticsearch/ and
config/kibana/ are written from these functions and a test keeps them identical.

`setup` installs, each step idempotent (running it twice gives the same result):
the ILM policy (skipped on serverless, where the retention becomes the data stream's
lifecycle), the ingest pipeline that stamps `event.ingested`, the index template (data
stream, ECS mappings for every alert field), the data stream itself - rolled over when
its write index was created from another template - and, in Kibana, the saved objects
(a data view, a saved search and a dashboard) and the Security rule that promotes
zeekndm alerts (with an exception on Elastic's prebuilt External Alerts rule, so an
alert is promoted once whichever rules are enabled).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from zeekndm.errors import ConfigError, SinkError
from zeekndm.redact import Redactor, redact_url
from zeekndm.sinks.datastream import ServerError, quote_name
from zeekndm.sinks.elasticsearch import (
    TEMPLATE_VERSION,
    Credentials,
    ElasticsearchSettings,
    check_url,
    connection_problem,
    data_stream_name,
    is_serverless,
    make_client,
    verify_info,
)
from zeekndm.sinks.elasticsearch import perform as es_perform

log = logging.getLogger(__name__)
_DATASET = "zeekndm.alert"

ILM_POLICY = "zeekndm-alerts"
INGEST_PIPELINE = "zeekndm-alerts"
DATA_VIEW_ID = "zeekndm-alerts"
DASHBOARD_ID = "zeekndm-alerts-overview"
SEARCH_ID = "zeekndm-alerts-table"
RULE_ID = "zeekndm-promote-scan-alerts"
EXTERNAL_ALERTS_RULE_ID = "eb079c62-4481-4d6e-9643-3ca499df7aaa"  # Elastic's prebuilt rule
EXCEPTION_ITEM_ID = "zeekndm-alerts-promoted-by-the-zeekndm-rule"
ASSETS = ("template", "ilm-policy", "ingest-pipeline", "dashboards", "detection-rule")
PARTS = ("template", "dashboards", "detection-rule")
# The saved objects declare typeMigrationVersion 8.9.0 (the dashboard's Lens panels):
# Kibana below 8.9 refuses them as "belongs to a more recent version of Kibana".
KIBANA_MIN = (8, 9)
KIBANA_MAX_MAJOR = 9
PANEL_VERSION = "8.9.0"
DASHBOARD_TITLE = "[zeekndm] Scan detection alerts"
DASHBOARD_DESCRIPTION = (
    "Outbound scanning detected by zeekndm network detection models, with the MITRE ATT&CK "
    "mapping of each model."
)
_SPACE = re.compile(r"^[a-z0-9_-]{1,1024}$")


# -- Elasticsearch assets -----------------------------------------------------------------
def _kw(**extra: Any) -> dict:
    return {"type": "keyword", "ignore_above": 1024, **extra}


_K = _kw()
_LONG = {"type": "long"}
_FLOAT = {"type": "float"}
_DATE = {"type": "date"}
_IP = {"type": "ip"}
_TEXT = {"type": "text"}


def _obj(**props: Any) -> dict:
    return {"properties": props}


def alert_mappings() -> dict:
    """ECS-style mappings for every field `zeekndm.enrich.enrich` writes."""
    ref = _obj(id=_K, name=_K, reference=_K)
    return {
        "dynamic": True,
        "date_detection": False,
        "dynamic_templates": [
            {"strings_as_keyword": {"match_mapping_type": "string", "mapping": _kw()}}
        ],
        "properties": {
            "@timestamp": _DATE,
            "message": _TEXT,
            "data_stream": _obj(
                type={"type": "constant_keyword"},
                dataset={"type": "constant_keyword"},
                namespace={"type": "constant_keyword"},
            ),
            "ecs": _obj(version=_K),
            "agent": _obj(type=_K, version=_K),
            "event": _obj(
                kind=_K,
                category=_K,
                type=_K,
                action=_K,
                severity=_LONG,
                risk_score=_FLOAT,
                start=_DATE,
                end=_DATE,
                duration=_LONG,
                dataset=_K,
                module=_K,
                provider=_K,
                id=_K,
                created=_DATE,
                ingested=_DATE,
            ),  # fmt: skip
            "rule": _obj(
                id=_K,
                uuid=_K,
                name=_K,
                description=_K,  # keyword, as ECS and ecs@mappings have it
                category=_K,
                ruleset=_K,
                version=_K,
                author=_K,
                reference=_K,
            ),  # fmt: skip
            "threat": _obj(
                framework=_K,
                technique=_obj(id=_K, name=_K, reference=_K, subtechnique=ref),
                tactic=ref,
            ),
            "source": _obj(ip=_IP, port=_LONG),
            "destination": _obj(ip=_IP, port=_LONG),
            "network": _obj(transport=_K, direction=_K, community_id=_K),
            "observer": _obj(type=_K, vendor=_K, product=_K, hostname=_K),
            "related": _obj(ip=_IP),
            "zeekndm": _obj(
                alert_state=_K,
                severity_name=_K,
                title=_kw(fields={"text": _TEXT}),
                episode_id=_K,
                sequence=_LONG,
                distinct_destinations=_LONG,
                distinct_is_lower_bound={"type": "boolean"},
                total_distinct_destinations=_LONG,
                attempts=_LONG,
                failures=_LONG,
                successes=_LONG,
                failure_ratio=_FLOAT,
                sample_destinations=_IP,
                ports=_LONG,
                transports=_K,
                window_seconds=_FLOAT,
                threshold=_LONG,
                what_to_look_for=_TEXT,
                false_positives=_TEXT,
                model_version=_LONG,
                detector=_K,
                end_reason=_K,
                first_seen=_DATE,
                last_seen=_DATE,
                counted=_K,
                distinct_count=_LONG,
                decided_by=_K,
                answered=_K,
                unanswered=_K,
                sample_uids=_K,
                sample_community_ids=_K,
                window_distinct=_LONG,
                new_distinct_since_previous=_LONG,
                target=_IP,
            ),  # fmt: skip
        },
    }


def template_body(
    namespace: str = "default",
    ilm: bool = True,
    *,
    lifecycle_retention: str | None = None,
    index_mode: bool = True,
) -> dict:
    """The composable index template for the data stream logs-zeekndm.alert-<namespace>.

    Priority 200 wins over Elasticsearch's built-in `logs-*-*` template (priority 100),
    so these mappings (ip, date, numbers) apply rather than dynamic ones. It replaces
    that template whole, so it names its own default pipeline, which calls the
    `logs@custom` hook as the built-in one does.

    `index.mode: standard` and `index.mapping.ignore_malformed: false` are explicit: on
    9.x a `logs-*-*` data stream whose template leaves the mode unset becomes LogsDB,
    which ignores malformed values (the document is accepted without the field), and an
    alert whose field contradicts the mapping must reach the dead-letter file instead.
    `index_mode=False` leaves the mode out for servers older than 8.1, which lack the
    setting. `ilm=False` (serverless) drops the ILM policy; `lifecycle_retention` then
    carries the retention as the data stream lifecycle.
    """
    mappings = alert_mappings()
    mappings["_meta"] = {"managed_by": "zeekndm", "template_version": TEMPLATE_VERSION}
    mappings["properties"]["data_stream"]["properties"]["type"]["value"] = "logs"
    mappings["properties"]["data_stream"]["properties"]["dataset"]["value"] = "zeekndm.alert"
    mappings["properties"]["data_stream"]["properties"]["namespace"]["value"] = namespace
    index: dict[str, Any] = {
        "mapping": {"total_fields": {"limit": 2000}, "ignore_malformed": False},
        "default_pipeline": INGEST_PIPELINE,
    }
    if index_mode:
        index["mode"] = "standard"
    if ilm:
        index["lifecycle"] = {"name": ILM_POLICY}
    template: dict[str, Any] = {"settings": {"index": index}, "mappings": mappings}
    if lifecycle_retention:
        template["lifecycle"] = {"data_retention": lifecycle_retention}
    return {
        "index_patterns": [data_stream_name(namespace)],
        "data_stream": {},
        "allow_auto_create": True,
        "priority": 200,
        "template": template,
        "version": TEMPLATE_VERSION,
        "_meta": {
            "managed_by": "zeekndm",
            "description": "zeekndm network detection alerts (ECS)",
        },
    }


def ingest_pipeline_body() -> dict:
    """The data stream's default pipeline: the users' hooks, then `event.ingested`.

    Why `event.ingested`: alerts carry the traffic time in `@timestamp` and are often
    indexed much later (a replay, a drained spool, Zeek writing a connection when it
    ends); the Security rule looks back on the time the cluster received them, as
    Elastic's External Alerts rule does. The hooks are the ones Elastic's logs pipeline
    calls (`logs@custom`) and the per-dataset one Fleet integrations call; neither exists
    by default and both are skipped when missing.
    """
    return {
        "description": "zeekndm alerts: custom hooks, then event.ingested",
        "processors": [
            {"pipeline": {"name": "logs@custom", "ignore_missing_pipeline": True}},
            {"pipeline": {"name": f"logs-{_DATASET}@custom", "ignore_missing_pipeline": True}},
            {
                "set": {
                    "description": "when the cluster received the alert",
                    "field": "event.ingested",
                    "value": "{{{_ingest.timestamp}}}",
                }
            },
        ],
        "_meta": {"managed_by": "zeekndm"},
    }


def ilm_policy_body(
    rollover_max_age: str = "30d",
    rollover_max_primary_shard_size: str = "50gb",
    retention: str = "365d",
) -> dict:
    """Hot phase with rollover, deletion after `retention` (counted from rollover)."""
    return {
        "policy": {
            "_meta": {"managed_by": "zeekndm"},
            "phases": {
                "hot": {
                    "min_age": "0ms",
                    "actions": {
                        "rollover": {
                            "max_age": rollover_max_age,
                            "max_primary_shard_size": rollover_max_primary_shard_size,
                        }
                    },
                },
                "delete": {"min_age": retention, "actions": {"delete": {}}},
            },
        }
    }


# -- Kibana saved objects -----------------------------------------------------------------
def _terms(field: str, order_by: str, size: int = 10, data_type: str = "string") -> dict:
    """A terms column; `data_type` is the field's Kibana type (string, number, ip)."""
    return {
        "label": f"Top values of {field}",
        "dataType": data_type,
        "operationType": "terms",
        "sourceField": field,
        "isBucketed": True,
        "scale": "ordinal",
        "params": {
            "size": size,
            "orderBy": {"type": "column", "columnId": order_by},
            "orderDirection": "desc",
            "otherBucket": True,
            "missingBucket": False,
            "parentFormat": {"id": "terms"},
        },
    }


_COUNT = {
    "label": "Alerts",
    "customLabel": True,
    "dataType": "number",
    "operationType": "count",
    "isBucketed": False,
    "scale": "ratio",
    "sourceField": "___records___",
    "params": {"emptyAsNull": True},
}
_OVER_TIME = {
    "label": "@timestamp",
    "dataType": "date",
    "operationType": "date_histogram",
    "sourceField": "@timestamp",
    "isBucketed": True,
    "scale": "interval",
    "params": {"interval": "auto", "includeEmptyRows": True, "dropPartials": False},
}


def _lens_panel(
    index: int, title: str, grid: tuple[int, int, int, int], vis_type: str,
    visualization: dict, columns: dict[str, dict],
) -> tuple[dict, dict]:  # fmt: skip
    """A Lens panel stored by value in the dashboard (Kibana 8.x), and its reference."""
    panel_id = f"p{index}"
    ref_name = "indexpattern-datasource-layer-l1"
    x, y, w, h = grid
    panel = {
        "version": PANEL_VERSION,
        "type": "lens",
        "panelIndex": panel_id,
        "gridData": {"x": x, "y": y, "w": w, "h": h, "i": panel_id},
        "title": title,
        "embeddableConfig": {
            "enhancements": {},
            "attributes": {
                "title": title,
                "description": "",
                "visualizationType": vis_type,
                "type": "lens",
                "references": [{"type": "index-pattern", "id": DATA_VIEW_ID, "name": ref_name}],
                "state": {
                    "visualization": visualization,
                    "query": {"query": "", "language": "kuery"},
                    "filters": [],
                    "datasourceStates": {
                        "formBased": {
                            "layers": {
                                "l1": {
                                    "columns": columns,
                                    "columnOrder": list(columns),
                                    "incompleteColumns": {},
                                }
                            }
                        }
                    },
                    "internalReferences": [],
                    "adHocDataViews": {},
                },
            },
        },
    }
    reference = {"type": "index-pattern", "id": DATA_VIEW_ID, "name": f"{panel_id}:{ref_name}"}
    return panel, reference


def _xy(series: str, split: bool = True) -> dict:
    layer = {
        "layerId": "l1",
        "layerType": "data",
        "seriesType": series,
        "accessors": ["count"],
        "xAccessor": "x",
        "showGridlines": False,
    }
    if split:
        layer["splitAccessor"] = "split"
    return {
        "legend": {"isVisible": True, "position": "right"},
        "valueLabels": "hide",
        "preferredSeriesType": series,
        "layers": [layer],
    }


def _pie(shape: str, groups: list[str]) -> dict:
    return {
        "shape": shape,
        "layers": [
            {
                "layerId": "l1",
                "layerType": "data",
                "primaryGroups": groups,
                "metrics": ["count"],
                "numberDisplay": "percent",
                "categoryDisplay": "default",
                "legendDisplay": "default",
                "nestedLegend": False,
            }
        ],
    }


def alert_search(index_pattern_id: str, **attributes: Any) -> dict:
    """The saved search "zeekndm alerts" (every alert, newest first), in the saved-object
    format Kibana and OpenSearch Dashboards share; `attributes` adds one product's own."""
    return {
        "type": "search",
        "id": SEARCH_ID,
        "attributes": {
            "title": "zeekndm alerts",
            "description": "Every zeekndm alert, newest first",
            "columns": [
                "rule.name",
                "zeekndm.severity_name",
                "source.ip",
                "zeekndm.ports",
                "zeekndm.distinct_destinations",
                "zeekndm.alert_state",
                "observer.hostname",
                "message",
            ],  # fmt: skip
            "sort": [["@timestamp", "desc"]],
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps(
                    {
                        "query": {"query": 'event.dataset:"zeekndm.alert"', "language": "kuery"},
                        "filter": [],
                        "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index",
                    }
                )
            },
            **attributes,
        },
        "references": [
            {
                "type": "index-pattern",
                "id": index_pattern_id,
                "name": "kibanaSavedObjectMeta.searchSourceJSON.index",
            }
        ],
    }


def dashboard_objects() -> list[dict]:
    """The data view, the alert table (a saved search) and the overview dashboard."""
    data_view = {
        "type": "index-pattern",
        "id": DATA_VIEW_ID,
        "attributes": {
            "title": "logs-zeekndm.alert-*",
            "name": "zeekndm alerts",
            "timeFieldName": "@timestamp",
            "allowNoIndex": True,
        },
        "references": [],
        "coreMigrationVersion": "8.8.0",
        "typeMigrationVersion": "8.0.0",
    }
    search = alert_search(DATA_VIEW_ID, grid={}, hideChart=False, isTextBasedQuery=False)
    search.update(coreMigrationVersion="8.8.0", typeMigrationVersion="8.0.0")
    panels, references = [], []
    specs = [
        ("Alerts over time by model", (0, 0, 24, 14), "lnsXY", _xy("bar_stacked"),
         {"x": _OVER_TIME, "split": _terms("rule.name", "count"), "count": _COUNT}),
        ("Alerts over time by severity", (24, 0, 24, 14), "lnsXY", _xy("bar_stacked"),
         {"x": _OVER_TIME, "split": _terms("zeekndm.severity_name", "count", 4),
          "count": _COUNT}),
        ("Top scanning sources", (0, 14, 16, 14), "lnsXY", _xy("bar_horizontal", split=False),
         {"x": _terms("source.ip", "count", 15, "ip"), "count": _COUNT}),
        # zeekndm.ports, not destination.port: ECS's destination.port holds one port and
        # is only set when the model watches one (LDAP's watches five)
        ("Top destination ports", (16, 14, 16, 14), "lnsPie", _pie("donut", ["port"]),
         {"port": _terms("zeekndm.ports", "count", 10, "number"), "count": _COUNT}),
        ("MITRE ATT&CK techniques", (32, 14, 16, 14), "lnsPie",
         _pie("treemap", ["tactic", "technique"]),
         {"tactic": _terms("threat.tactic.name", "count"),
          "technique": _terms("threat.technique.name", "count"), "count": _COUNT}),
    ]  # fmt: skip
    for i, (title, grid, vis_type, vis, columns) in enumerate(specs, 1):
        panel, ref = _lens_panel(i, title, grid, vis_type, vis, columns)
        panels.append(panel)
        references.append(ref)
    table_index = f"p{len(specs) + 1}"
    panels.append(
        {
            "version": PANEL_VERSION,
            "type": "search",
            "panelIndex": table_index,
            "gridData": {"x": 0, "y": 28, "w": 48, "h": 20, "i": table_index},
            "title": "Alerts",
            "embeddableConfig": {"enhancements": {}},
            "panelRefName": f"panel_{table_index}",
        }
    )
    references.append(
        {"type": "search", "id": SEARCH_ID, "name": f"{table_index}:panel_{table_index}"}
    )
    dashboard = {
        "type": "dashboard",
        "id": DASHBOARD_ID,
        "attributes": {
            "title": DASHBOARD_TITLE,
            "description": DASHBOARD_DESCRIPTION,
            "timeRestore": True,
            "timeFrom": "now-7d",
            "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 60000},
            "optionsJSON": json.dumps(
                {"useMargins": True, "syncColors": False, "hidePanelTitles": False}
            ),
            "panelsJSON": json.dumps(panels),
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps(
                    {"query": {"query": "", "language": "kuery"}, "filter": []}
                )
            },
            "version": 1,
        },
        "references": references,
        "coreMigrationVersion": "8.8.0",
        "typeMigrationVersion": "8.9.0",
    }
    return [data_view, search, dashboard]


def dashboards_ndjson() -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in dashboard_objects())


def detection_rule(enabled: bool = False) -> dict:
    """A Kibana Security custom-query rule that promotes zeekndm alerts to detection alerts.

    Why: Security lists zeekndm documents as *external alerts* (event.kind: alert in
    logs-*); a rule is what turns them into detection alerts an analyst can triage, assign
    and close. Only `start` and `escalated` documents are `event.kind: alert` (updates and
    ends are `event`), so an episode is promoted at its start and at each escalation, not
    on every periodic update; severity, risk score and rule name come from each alert.
    It looks back on `event.ingested` (set by the ingest pipeline), as Elastic's External
    Alerts rule does, so alerts indexed long after their traffic (a replay, a drained
    spool) are promoted too; documents without it fall back to `@timestamp`.
    `zeekndm setup --kibana` installs it (enabled, or as the user left it); the exported
    copy is disabled, for Security > Rules > Import rules.
    """
    techniques = [
        ("T1046", "Network Service Discovery", "TA0007", "Discovery"),
        ("T1595", "Active Scanning", "TA0043", "Reconnaissance"),
    ]
    return {
        "rule_id": RULE_ID,
        "name": "zeekndm scan alert",
        "description": "Promotes zeekndm network detection alerts (a host scanning others for "
        "a service such as MongoDB or LDAP) to Security detection alerts, once when an "
        "episode starts and once per escalation.",
        "type": "query",
        "language": "kuery",
        "index": ["logs-zeekndm.alert-*"],
        "query": 'event.dataset:"zeekndm.alert" and event.kind:alert and '
        "zeekndm.alert_state:(start or escalated)",
        "timestamp_override": "event.ingested",
        "from": "now-6m",
        "interval": "5m",
        "enabled": enabled,
        "severity": "medium",
        "risk_score": 47,
        "severity_mapping": [
            {"field": "zeekndm.severity_name", "operator": "equals", "value": v, "severity": v}
            for v in ("low", "medium", "high", "critical")
        ],
        "risk_score_mapping": [{"field": "event.risk_score", "operator": "equals", "value": ""}],
        "rule_name_override": "rule.name",
        "max_signals": 100,
        "tags": ["zeekndm", "Domain: Network", "Tactic: Discovery", "Tactic: Reconnaissance"],
        "author": ["zeekndm"],
        "license": "Apache-2.0",
        "version": 2,
        "note": "The alert's `rule.description` explains the model and "
        "`zeekndm.what_to_look_for` says what to check on the source host; "
        "`zeekndm.sample_destinations` lists some of the scanned hosts.",
        "threat": [
            {
                "framework": "MITRE ATT&CK",
                "tactic": {
                    "id": ta,
                    "name": tname,
                    "reference": f"https://attack.mitre.org/tactics/{ta}/",
                },
                "technique": [
                    {
                        "id": t,
                        "name": name,
                        "reference": f"https://attack.mitre.org/techniques/{t}/",
                        "subtechnique": [],
                    }
                ],
            }
            for t, name, ta, tname in techniques
        ],
    }


def external_alerts_exception() -> dict:
    """The exception `setup` adds to Elastic's External Alerts rule while ours is enabled.

    Elastic's prebuilt External Alerts rule promotes every `event.kind: alert` document in
    `logs-*`, ours included; with both rules enabled each zeekndm alert would become two
    Security alerts. Elastic does the same for its own integrations with dedicated
    promotion rules (the prebuilt query excludes those datasets)."""
    return {
        "item_id": EXCEPTION_ITEM_ID,
        "name": "zeekndm alerts are promoted by the zeekndm rule",
        "description": "Added by `zeekndm setup` while the 'zeekndm scan alert' rule is "
        "enabled, so each zeekndm alert is promoted once. Run `zeekndm setup` again after "
        "disabling that rule, or delete this exception.",
        "type": "simple",
        "namespace_type": "single",
        "tags": ["zeekndm"],
        "entries": [
            {"field": "event.dataset", "operator": "included", "type": "match", "value": _DATASET}
        ],  # fmt: skip
    }


def export_asset(name: str, settings: ElasticsearchSettings | None = None) -> str:
    """What `zeekndm export <name>` prints: exactly what `setup` would install on a
    self-managed 8.1+ cluster (with the namespace and ILM durations of `settings` when a
    config gives them)."""
    if name == "template":
        namespace = settings.namespace if settings is not None else "default"
        return json.dumps(template_body(namespace), indent=2) + "\n"
    if name == "ilm-policy":
        if settings is None:
            return json.dumps(ilm_policy_body(), indent=2) + "\n"
        body = ilm_policy_body(
            rollover_max_age=settings.rollover_max_age, retention=settings.retention
        )
        return json.dumps(body, indent=2) + "\n"
    if name == "ingest-pipeline":
        return json.dumps(ingest_pipeline_body(), indent=2) + "\n"
    if name == "dashboards":
        return dashboards_ndjson()
    if name == "detection-rule":
        return json.dumps(detection_rule(), sort_keys=True) + "\n"
    raise ConfigError(f"unknown asset {name!r}; choose one of {', '.join(ASSETS)}")


# -- setup: Elasticsearch -----------------------------------------------------------------
def run_setup(
    es_settings: ElasticsearchSettings | None,
    kibana_url: str | None,
    parts: set[str],
    kibana_auth: tuple[str, str] | None = None,
    client_factory: Callable[[ElasticsearchSettings], Any] | None = None,
    timeout: float = 30.0,
    kibana_space: str | None = None,
) -> list[str]:
    """Install the parts ("template": ILM policy, ingest pipeline, index template, data
    stream; "dashboards": Kibana saved objects; "detection-rule": the Security rule).
    One result line per step; SinkError on failure.

    Kibana credentials default to the Elasticsearch ones (as Filebeat's setup.kibana does);
    `kibana_auth` (username, password) overrides them.
    """
    unknown = parts - set(PARTS)
    if unknown:
        raise ConfigError(f"unknown setup part(s): {', '.join(sorted(unknown))}")
    lines: list[str] = []
    if "template" in parts:
        if es_settings is None:
            raise ConfigError("setup --template needs an Elasticsearch output")
        lines += _setup_elasticsearch(es_settings, client_factory or make_client)
    kibana_parts = parts & {"dashboards", "detection-rule"}
    if kibana_parts:
        if not kibana_url:
            raise ConfigError("setup --dashboards/--detection-rule needs a Kibana URL")
        kibana = KibanaClient.connect(kibana_url, kibana_space, es_settings, kibana_auth, timeout)
        lines.append(kibana.check_version())
        if "dashboards" in parts:
            lines.append(kibana.import_saved_objects())
        if "detection-rule" in parts:
            lines += kibana.install_detection_rule()
    return lines


def _version(number: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", number)[:3]) or (0,)


def _setup_elasticsearch(
    settings: ElasticsearchSettings, factory: Callable[[ElasticsearchSettings], Any]
) -> list[str]:
    from elasticsearch import ApiError

    client = factory(settings)
    try:
        redact = Credentials.load(settings).redactor()
    except SinkError:
        redact = Redactor()
    name = settings.data_stream
    try:
        try:
            info = client.info().body
        except Exception as exc:  # noqa: BLE001
            raise connection_problem(exc, settings, redact) from None
        lines = [verify_info(info, settings)]
        serverless = is_serverless(info)
        version = _version(str((info.get("version") or {}).get("number", "0")))
        try:
            ilm = not serverless
            if serverless:
                lines.append(
                    f"ilm policy {ILM_POLICY}: skipped (serverless: retention "
                    f"{settings.retention} is set as the data stream lifecycle)"
                )
            else:
                ilm = _put_ilm_policy(client, settings, lines)
            client.ingest.put_pipeline(id=INGEST_PIPELINE, **ingest_pipeline_body())
            lines.append(f"ingest pipeline {INGEST_PIPELINE}: installed (sets event.ingested)")
            body = template_body(
                settings.namespace,
                ilm=ilm,
                lifecycle_retention=None if ilm else settings.retention,
                index_mode=serverless or version >= (8, 1),
            )
            client.indices.put_index_template(name=name, body=body)
            lines.append(f"index template {name}: installed (version {TEMPLATE_VERSION})")
            lines.append(ensure_data_stream(_requester(client, settings), name))
        except SinkError:
            raise
        except ServerError as exc:
            raise connection_problem(exc.original or exc, settings, redact) from None
        except ApiError as exc:
            raise connection_problem(exc, settings, redact) from None
        except Exception as exc:  # noqa: BLE001 - connection lost mid-way
            raise connection_problem(exc, settings, redact) from None
        return lines
    finally:
        client.close()


def _requester(client: Any, settings: ElasticsearchSettings) -> Callable[[str, str], Any]:
    def request(method: str, path: str) -> Any:
        return es_perform(client, method, path, timeout=settings.request_timeout)

    return request


def _put_ilm_policy(client: Any, settings: ElasticsearchSettings, lines: list[str]) -> bool:
    """Install the policy; False when this cluster has no ILM (retention then via DSL)."""
    from elasticsearch import ApiError

    policy = ilm_policy_body(
        rollover_max_age=settings.rollover_max_age, retention=settings.retention
    )
    try:
        client.ilm.put_lifecycle(name=ILM_POLICY, policy=policy["policy"])
    except ApiError as exc:
        text = str(exc.body)
        if exc.status_code in (400, 404, 410) and (
            "api_not_available" in text or "no handler found" in text
        ):
            lines.append(
                f"ilm policy {ILM_POLICY}: skipped (ILM not available here: retention "
                f"{settings.retention} is set as the data stream lifecycle)"
            )
            return False
        raise
    lines.append(f"ilm policy {ILM_POLICY}: installed")
    return True


def ensure_data_stream(request: Callable[[str, str], Any], name: str) -> str:
    """Create the data stream, or roll it over when its write index is not from our template.

    A template applies only to backing indices created after it: a data stream made by
    Elasticsearch's built-in `logs` template (alerts sent before `setup`) or by an older
    zeekndm keeps its mappings until the next rollover. `request(method, path)` is one
    call to the server (the parsed body; `ServerError` when it fails), Elasticsearch's or
    OpenSearch's: both answer these the same way."""
    quoted = quote_name(name)
    try:
        request("PUT", f"/_data_stream/{quoted}")
        return f"data stream {name}: created"
    except ServerError as exc:
        if not (exc.status == 400 and "already_exists" in str(exc.error)):
            raise
    ds = request("GET", f"/_data_stream/{quoted}")["data_streams"][0]
    governing = ds.get("template")
    if governing and governing != name:
        raise SinkError(
            f"data stream {name} is governed by index template {governing!r}, which has a "
            "higher priority than zeekndm's (200): remove it or lower its priority, then run "
            "setup again"
        )
    write_index = ds["indices"][-1]["index_name"]
    mapping = request("GET", f"/{quote_name(write_index)}/_mapping")
    meta = (mapping.get(write_index) or {}).get("mappings", {}).get("_meta") or {}
    if meta.get("managed_by") == "zeekndm" and meta.get("template_version") == TEMPLATE_VERSION:
        return f"data stream {name}: already exists"
    was = (
        f"template version {meta.get('template_version')}"
        if meta.get("managed_by") == "zeekndm"
        else "another template (Elasticsearch's built-in logs template?)"
    )
    new = request("POST", f"/{quoted}/_rollover").get("new_index", "?")
    return (
        f"data stream {name}: rolled over to {new} (its write index {write_index} had "
        f"mappings from {was}; new alerts get zeekndm's)"
    )


# -- setup: Kibana ------------------------------------------------------------------------
class KibanaClient:
    """Kibana's HTTP API, as `setup` needs it.

    Requests never follow redirects (a 3xx would carry the credentials to wherever it
    points, and turn the import's POST into a GET): the message names the target so the
    user can pass it as --kibana. Each request has an overall deadline."""

    def __init__(
        self,
        url: str,
        space: str | None,
        authorization: str | None,
        ssl_context: ssl.SSLContext | None,
        timeout: float,
        redact: Redactor,
    ) -> None:
        check_url(url, "--kibana")
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise ConfigError("must not have a query string or fragment", key="--kibana")
        base = parts.path.rstrip("/")
        in_url = re.search(r"/s/([^/]+)$", base)
        self.root = base[: in_url.start()] if in_url else base  # the status API has no space
        if space is not None:
            if not _SPACE.match(space):
                raise ConfigError(
                    f"{space!r} is not a Kibana space id (lowercase letters, digits, '_', '-')",
                    key="--kibana-space",
                )
            if in_url and in_url.group(1) != space:
                raise ConfigError(
                    f"the Kibana URL already names space {in_url.group(1)!r}", key="--kibana-space"
                )
            if not in_url and space != "default":
                base += f"/s/{space}"
        self.space = space or (in_url.group(1) if in_url else "default")
        self.display = redact_url(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port
        self.base = base
        self.authorization = authorization
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.redact = redact

    @classmethod
    def connect(
        cls,
        url: str,
        space: str | None,
        es_settings: ElasticsearchSettings | None,
        kibana_auth: tuple[str, str] | None,
        timeout: float,
    ) -> KibanaClient:
        from base64 import b64encode

        if kibana_auth:
            user, password = kibana_auth
            authorization = "Basic " + b64encode(f"{user}:{password}".encode()).decode()
            redact = Redactor.for_basic(user, password)
        elif es_settings is not None:
            creds = Credentials.load(es_settings)
            authorization, redact = creds.authorization(), creds.redactor()
        else:
            authorization, redact = None, Redactor()
        context = None
        if urlsplit(url).scheme == "https":
            ca = es_settings.ca_file if es_settings is not None else None
            context = ssl.create_default_context(cafile=ca)
            if es_settings is not None and not es_settings.verify_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return cls(url, space, authorization, context, timeout, redact)

    # -- transport -------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        spaced: bool = True,
    ) -> tuple[int, Any]:
        headers = {"kbn-xsrf": "zeekndm", "Accept": "application/json"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        if content_type:
            headers["Content-Type"] = content_type
        if self.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.ssl_context
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            if conn.sock is not None:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = threading.Timer(self.timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            conn.request(
                method, (self.base if spaced else self.root) + path, body=body, headers=headers
            )
            resp = conn.getresponse()
            raw = resp.read()
            status, location = resp.status, resp.getheader("Location")
        except (OSError, http.client.HTTPException) as exc:
            if expired.is_set():
                raise SinkError(
                    f"Kibana {self.display} did not answer within {self.timeout:g} s"
                ) from None
            reason = getattr(exc, "reason", None) or exc
            raise SinkError(
                f"cannot reach Kibana at {self.display}: {self.redact(reason)}"
            ) from None
        finally:
            timer.cancel()
            conn.close()
        if 300 <= status < 400:
            target = redact_url(location) if location else "?"
            raise SinkError(
                f"Kibana {self.display} answered {status}, a redirect to {target}: zeekndm does "
                "not follow redirects with credentials; if that is Kibana, pass it as --kibana"
            )
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None

    def _fail(self, status: int, body: Any, what: str) -> SinkError:
        message = self.redact(body.get("message", "")) if isinstance(body, dict) else ""
        if status == 401:
            return SinkError(
                f"Kibana {self.display} refused the credentials (401): check the Kibana "
                "(or Elasticsearch) username and password, or the API key"
            )
        if status == 403:
            return SinkError(
                f"Kibana {self.display}: the user lacks a privilege (403) to {what}: "
                f"{message} (see README, Roles)"
            )
        if status == 404 and "space/" in message:
            return SinkError(f"Kibana {self.display}: space {self.space!r} does not exist")
        if "kbn-xsrf" in message:
            return SinkError(
                f"Kibana {self.display} rejected the request: {message} (a proxy dropping the "
                "kbn-xsrf header?)"
            )
        return SinkError(f"Kibana {self.display} refused to {what} ({status}): {message}")

    def _kibana_shaped(self, body: Any) -> bool:
        return isinstance(body, dict) and bool(
            {"success", "statusCode", "status_code", "version", "id", "rule_id"} & set(body)
        )

    def _multipart(self, filename: str, content: str) -> tuple[bytes, str]:
        boundary = uuid.uuid4().hex
        payload = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/ndjson\r\n\r\n"
            f"{content}\r\n"
            f"--{boundary}--\r\n"
        ).encode()
        return payload, f"multipart/form-data; boundary={boundary}"

    # -- steps -----------------------------------------------------------------------------
    def check_version(self) -> str:
        """Refuse a Kibana the saved objects cannot be imported into, in one line."""
        status, body = self.request("GET", "/api/status", spaced=False)
        if status in (401, 403):
            raise self._fail(status, body, "read its status")
        version = body.get("version") if isinstance(body, dict) else None
        if status != 200 or not isinstance(version, dict):
            raise SinkError(
                f"{self.display} did not answer as Kibana's status API does (HTTP {status})"
            )
        number = str(version.get("number", "?"))
        if version.get("build_flavor") == "serverless":
            return f"kibana {self.display} OK (serverless, space {self.space})"
        v = _version(number)
        if v[:2] < KIBANA_MIN or v[0] > KIBANA_MAX_MAJOR:
            raise SinkError(
                f"Kibana {number} at {self.display} is not supported: zeekndm's saved objects "
                f"need Kibana {KIBANA_MIN[0]}.{KIBANA_MIN[1]} to {KIBANA_MAX_MAJOR}.x"
            )
        return f"kibana {self.display} OK (version {number}, space {self.space})"

    def import_saved_objects(self) -> str:
        """POST the dashboards to Kibana's saved-objects import API (overwrite=true)."""
        payload, ctype = self._multipart("zeekndm-dashboards.ndjson", dashboards_ndjson())
        status, body = self.request(
            "POST", "/api/saved_objects/_import?overwrite=true", payload, ctype
        )
        if status in (401, 403):
            raise self._fail(status, body, "import saved objects")
        if not self._kibana_shaped(body):
            raise SinkError(
                f"{self.display} did not answer as Kibana's saved-objects API does (HTTP {status})"
            )
        if status != 200:
            raise self._fail(status, body, "import the saved objects")
        if not body.get("success"):
            errors = body.get("errors") or []
            first = errors[0] if errors else {}
            error = first.get("error", {})
            detail = error.get("message") or error.get("type")
            raise SinkError(
                f"Kibana {self.display} imported {body.get('successCount', 0)} objects, "
                f"{len(errors)} failed (first: {first.get('type')} {first.get('id')}: {detail})"
            )
        return (
            f"kibana: {body.get('successCount', 0)} saved objects imported into space "
            f"{self.space} (data view, saved search, dashboard '[zeekndm] Scan detection alerts')"
        )

    def _get_rule(self, rule_id: str) -> dict | None:
        status, body = self.request("GET", f"/api/detection_engine/rules?rule_id={rule_id}")
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise self._fail(status, body, "read Security rules")
        return body

    def install_detection_rule(self) -> list[str]:
        """Import (or update) our rule, keeping its enabled state; set the External Alerts
        exception so each zeekndm alert is promoted once."""
        existing = self._get_rule(RULE_ID)
        enabled = bool(existing.get("enabled")) if existing else True
        rule = detection_rule(enabled=enabled)
        payload, ctype = self._multipart("zeekndm-rule.ndjson", json.dumps(rule) + "\n")
        status, body = self.request(
            "POST", "/api/detection_engine/rules/_import?overwrite=true", payload, ctype
        )
        if status != 200 or not isinstance(body, dict):
            raise self._fail(status, body, "import Security rules")
        if not body.get("success"):
            first = (body.get("errors") or [{}])[0].get("error", {})
            raise SinkError(
                f"Kibana {self.display} refused the Security rule: {first.get('message', '?')}"
            )
        state = "enabled" if enabled else "disabled, as you left it"
        lines = [f"kibana: Security rule {rule['name']!r} installed ({state})"]
        external = self._get_rule(EXTERNAL_ALERTS_RULE_ID)
        if external is None:
            return lines
        status, _ = self.request(
            "GET", f"/api/exception_lists/items?item_id={EXCEPTION_ITEM_ID}&namespace_type=single"
        )
        has_exception = status == 200
        if enabled and not has_exception:
            body_bytes = json.dumps({"items": [external_alerts_exception()]}).encode()
            status, body = self.request(
                "POST",
                f"/api/detection_engine/rules/{external['id']}/exceptions",
                body_bytes,
                "application/json",
            )
            if status != 200:
                raise self._fail(status, body, "add a rule exception")
            lines.append(
                "kibana: Elastic's External Alerts rule: exception added (zeekndm alerts are "
                "promoted once, by the zeekndm rule)"
            )
        elif not enabled and has_exception:
            status, body = self.request(
                "DELETE",
                f"/api/exception_lists/items?item_id={EXCEPTION_ITEM_ID}&namespace_type=single",
            )
            if status != 200:
                raise self._fail(status, body, "remove a rule exception")
            lines.append(
                "kibana: Elastic's External Alerts rule: zeekndm exception removed (the zeekndm "
                "rule is disabled, External Alerts promotes zeekndm alerts)"
            )
        else:
            lines.append(
                "kibana: Elastic's External Alerts rule: "
                + ("exception already in place" if enabled else "no exception needed")
            )
        return lines
