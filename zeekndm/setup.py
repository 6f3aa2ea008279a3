"""`zeekndm setup` and `zeekndm export`: what Elasticsearch and Kibana need, as Filebeat does.

Why generated in code: the assets must ship with `pip install` and follow the alert
document (`zeekndm.enrich`) field for field; the copies under config/elasticsearch/ and
config/kibana/ are written from these functions and a test keeps them identical.

`setup` installs, each step idempotent (running it twice gives the same result):
the ILM policy, the index template (data stream, ECS mappings for every alert field),
the data stream itself, and the Kibana saved objects (a data view and a dashboard),
imported with `overwrite=true` and the `kbn-xsrf` header Kibana requires.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from collections.abc import Callable
from typing import Any

from zeekndm.errors import ConfigError, SinkError
from zeekndm.sinks.elasticsearch import (
    ElasticsearchSettings,
    connection_problem,
    data_stream_name,
    make_client,
    resolve_secret,
    verify_info,
)

log = logging.getLogger(__name__)

ILM_POLICY = "zeekndm-alerts"
DATA_VIEW_ID = "zeekndm-alerts"
DASHBOARD_ID = "zeekndm-alerts-overview"
SEARCH_ID = "zeekndm-alerts-table"
TEMPLATE_VERSION = 1
ASSETS = ("template", "ilm-policy", "dashboards", "detection-rule")


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
                ingested=_DATE,
            ),  # fmt: skip
            "rule": _obj(
                id=_K,
                uuid=_K,
                name=_K,
                description=_TEXT,
                category=_K,
                ruleset=_K,
                version=_K,
                author=_K,
                reference=_K,
            ),  # fmt: skip
            "threat": _obj(framework=_K, technique=ref, tactic=ref),
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


def template_body(namespace: str = "default", ilm: bool = True) -> dict:
    """The composable index template for the data stream logs-zeekndm.alert-<namespace>.

    Priority 200 wins over Elasticsearch's built-in `logs-*-*` template (priority 100),
    so these mappings (ip, date, numbers) apply rather than dynamic ones.
    """
    mappings = alert_mappings()
    mappings["properties"]["data_stream"]["properties"]["type"]["value"] = "logs"
    mappings["properties"]["data_stream"]["properties"]["dataset"]["value"] = "zeekndm.alert"
    mappings["properties"]["data_stream"]["properties"]["namespace"]["value"] = namespace
    settings: dict[str, Any] = {"index": {"mapping": {"total_fields": {"limit": 2000}}}}
    if ilm:
        settings["index"]["lifecycle"] = {"name": ILM_POLICY}
    return {
        "index_patterns": [data_stream_name(namespace)],
        "data_stream": {},
        "priority": 200,
        "template": {"settings": settings, "mappings": mappings},
        "version": TEMPLATE_VERSION,
        "_meta": {
            "managed_by": "zeekndm",
            "description": "zeekndm network detection alerts (ECS)",
        },
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
def _terms(field: str, order_by: str, size: int = 10) -> dict:
    return {
        "label": f"Top values of {field}",
        "dataType": "string",
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
    search = {
        "type": "search",
        "id": SEARCH_ID,
        "attributes": {
            "title": "zeekndm alerts",
            "description": "Every zeekndm alert, newest first",
            "columns": [
                "rule.name",
                "zeekndm.severity_name",
                "source.ip",
                "destination.port",
                "zeekndm.distinct_destinations",
                "zeekndm.alert_state",
                "observer.hostname",
                "message",
            ],  # fmt: skip
            "sort": [["@timestamp", "desc"]],
            "grid": {},
            "hideChart": False,
            "isTextBasedQuery": False,
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps(
                    {
                        "query": {"query": "event.kind:alert", "language": "kuery"},
                        "filter": [],
                        "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index",
                    }
                )
            },
        },
        "references": [
            {
                "type": "index-pattern",
                "id": DATA_VIEW_ID,
                "name": "kibanaSavedObjectMeta.searchSourceJSON.index",
            }
        ],
        "coreMigrationVersion": "8.8.0",
        "typeMigrationVersion": "8.0.0",
    }
    panels, references = [], []
    specs = [
        ("Alerts over time by model", (0, 0, 24, 14), "lnsXY", _xy("bar_stacked"),
         {"x": _OVER_TIME, "split": _terms("rule.name", "count"), "count": _COUNT}),
        ("Alerts over time by severity", (24, 0, 24, 14), "lnsXY", _xy("bar_stacked"),
         {"x": _OVER_TIME, "split": _terms("zeekndm.severity_name", "count", 4),
          "count": _COUNT}),
        ("Top scanning sources", (0, 14, 16, 14), "lnsXY", _xy("bar_horizontal", split=False),
         {"x": _terms("source.ip", "count", 15), "count": _COUNT}),
        ("Top destination ports", (16, 14, 16, 14), "lnsPie", _pie("donut", ["port"]),
         {"port": _terms("destination.port", "count"), "count": _COUNT}),
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
            "title": "[zeekndm] Scan detection alerts",
            "description": "Outbound scanning detected by zeekndm network detection models, "
            "with the MITRE ATT&CK mapping of each model.",
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


def detection_rule() -> dict:
    """A Kibana Security custom-query rule that promotes zeekndm alerts to detection alerts.

    Why: Security lists zeekndm documents as *external alerts* (event.kind: alert in
    logs-*); a rule is what turns them into detection alerts an analyst can triage, assign
    and close. New and escalated episodes only, so an episode is not promoted on every
    periodic update; severity, risk score and rule name come from each alert.
    Install with Security > Rules > Import rules, or POST it to
    /api/detection_engine/rules/_import (multipart `file`, kbn-xsrf header). It is
    imported disabled: enable it when the alerts look right.
    """
    techniques = [
        ("T1046", "Network Service Discovery", "TA0007", "Discovery"),
        ("T1595", "Active Scanning", "TA0043", "Reconnaissance"),
    ]
    return {
        "rule_id": "zeekndm-promote-scan-alerts",
        "name": "zeekndm outbound scan alert",
        "description": "Promotes zeekndm network detection alerts (an internal host scanning "
        "external hosts for a service such as MongoDB or LDAP) to Security detection alerts.",
        "type": "query",
        "language": "kuery",
        "index": ["logs-zeekndm.alert-*"],
        "query": 'event.kind:alert and event.dataset:"zeekndm.alert" and '
        "zeekndm.alert_state:(start or escalated)",
        "from": "now-6m",
        "interval": "5m",
        "enabled": False,
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
        "version": 1,
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


def export_asset(name: str, settings: ElasticsearchSettings | None = None) -> str:
    """What `zeekndm export <name>` prints: exactly what `setup` would install
    (with the namespace and ILM durations of `settings` when a config gives them)."""
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
    if name == "dashboards":
        return dashboards_ndjson()
    if name == "detection-rule":
        return json.dumps(detection_rule(), sort_keys=True) + "\n"
    raise ConfigError(f"unknown asset {name!r}; choose one of {', '.join(ASSETS)}")


# -- setup --------------------------------------------------------------------------------
def run_setup(
    es_settings: ElasticsearchSettings | None,
    kibana_url: str | None,
    parts: set[str],
    kibana_auth: tuple[str, str] | None = None,
    client_factory: Callable[[ElasticsearchSettings], Any] | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Install the parts ("template": ILM policy + index template + data stream;
    "dashboards": Kibana saved objects). One result line per step; SinkError on failure.

    Kibana credentials default to the Elasticsearch ones (as Filebeat's setup.kibana does);
    `kibana_auth` (username, password) overrides them.
    """
    unknown = parts - {"template", "dashboards"}
    if unknown:
        raise ConfigError(f"unknown setup part(s): {', '.join(sorted(unknown))}")
    lines: list[str] = []
    if "template" in parts:
        if es_settings is None:
            raise ConfigError("setup --template needs an Elasticsearch output")
        lines += _setup_elasticsearch(es_settings, client_factory or make_client)
    if "dashboards" in parts:
        if not kibana_url:
            raise ConfigError("setup --dashboards needs a Kibana URL")
        lines.append(import_saved_objects(kibana_url, es_settings, kibana_auth, timeout=timeout))
    return lines


def _setup_elasticsearch(
    settings: ElasticsearchSettings, factory: Callable[[ElasticsearchSettings], Any]
) -> list[str]:
    from elasticsearch import ApiError

    client = factory(settings)
    name = settings.data_stream
    try:
        try:
            info = client.info()
        except Exception as exc:  # noqa: BLE001
            raise connection_problem(exc, settings) from None
        lines = [verify_info(info.body, settings)]
        ilm = True
        try:
            policy = ilm_policy_body(
                rollover_max_age=settings.rollover_max_age, retention=settings.retention
            )
            client.ilm.put_lifecycle(name=ILM_POLICY, policy=policy["policy"])
            lines.append(f"ilm policy {ILM_POLICY}: installed")
        except ApiError as exc:
            if exc.status_code in (400, 404, 410) and "api_not_available" in str(exc.body):
                ilm = False  # serverless: lifecycle is managed by the platform
                lines.append(f"ilm policy {ILM_POLICY}: skipped (ILM not available here)")
            else:
                raise connection_problem(exc, settings) from None
        body = template_body(settings.namespace, ilm=ilm)
        try:
            client.indices.put_index_template(name=name, body=body)
            lines.append(f"index template {name}: installed (version {TEMPLATE_VERSION})")
            try:
                client.indices.create_data_stream(name=name)
                lines.append(f"data stream {name}: created")
            except ApiError as exc:
                if exc.status_code == 400 and "already_exists" in str(exc.body):
                    lines.append(f"data stream {name}: already exists")
                else:
                    raise
        except ApiError as exc:
            raise connection_problem(exc, settings) from None
        except Exception as exc:  # noqa: BLE001 - connection lost mid-way
            raise connection_problem(exc, settings) from None
        return lines
    finally:
        client.close()


def _kibana_headers(
    es_settings: ElasticsearchSettings | None, kibana_auth: tuple[str, str] | None
) -> dict[str, str]:
    headers = {"kbn-xsrf": "zeekndm", "Accept": "application/json"}
    if kibana_auth:
        user, password = kibana_auth
        headers["Authorization"] = "Basic " + b64encode(f"{user}:{password}".encode()).decode()
    elif es_settings is not None:
        api_key = resolve_secret(es_settings, "api_key")
        token = resolve_secret(es_settings, "bearer_token")
        if api_key:
            headers["Authorization"] = f"ApiKey {api_key}"
        elif es_settings.username:
            password = resolve_secret(es_settings, "password") or ""
            pair = f"{es_settings.username}:{password}".encode()
            headers["Authorization"] = "Basic " + b64encode(pair).decode()
        elif token:
            headers["Authorization"] = f"Bearer {token}"
    return headers


def import_saved_objects(
    kibana_url: str,
    es_settings: ElasticsearchSettings | None = None,
    kibana_auth: tuple[str, str] | None = None,
    timeout: float = 30.0,
) -> str:
    """POST the dashboards to Kibana's saved-objects import API (overwrite=true)."""
    boundary = uuid.uuid4().hex
    payload = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="zeekndm-dashboards.ndjson"\r\n'
        "Content-Type: application/ndjson\r\n\r\n"
        f"{dashboards_ndjson()}\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    headers = _kibana_headers(es_settings, kibana_auth)
    headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    url = kibana_url.rstrip("/") + "/api/saved_objects/_import?overwrite=true"
    request = urllib.request.Request(url, data=payload, headers=headers, method="POST")
    context = None
    if url.startswith("https") and es_settings is not None:
        context = ssl.create_default_context(cafile=es_settings.ca_file)
        if not es_settings.verify_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SinkError(f"cannot reach Kibana at {kibana_url}: {reason}") from None
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if status in (401, 403):
        raise SinkError(f"Kibana {kibana_url} refused the credentials ({status})")
    kibana_shaped = isinstance(body, dict) and ("success" in body or "statusCode" in body)
    if not kibana_shaped:
        raise SinkError(
            f"{kibana_url} did not answer as Kibana's saved-objects API does (HTTP {status})"
        )
    if status != 200:
        message = body.get("message", "")
        if "kbn-xsrf" in str(message):
            raise SinkError(
                f"Kibana {kibana_url} rejected the import: {message} (a proxy dropping the "
                "kbn-xsrf header?)"
            )
        raise SinkError(f"Kibana {kibana_url} rejected the import ({status}): {message}")
    if not body.get("success"):
        errors = body.get("errors") or []
        first = errors[0] if errors else {}
        raise SinkError(
            f"Kibana {kibana_url} imported {body.get('successCount', 0)} objects, "
            f"{len(errors)} failed (first: {first.get('type')} {first.get('id')}: "
            f"{first.get('error', {}).get('type')})"
        )
    return (
        f"kibana {kibana_url}: {body.get('successCount', 0)} saved objects imported "
        f"(dashboard '[zeekndm] Scan detection alerts')"
    )
