"""`zeekndm setup --opensearch` and the OpenSearch assets `zeekndm export` prints.

What differs from Elasticsearch's (`zeekndm.setup`), and why:

- the index template is the same composable template with the same ECS mappings
  (`constant_keyword` for `data_stream.*` is in OpenSearch's core), without what
  OpenSearch does not know: `allow_auto_create` (it auto-creates by its cluster setting),
  `index.mode` and the ILM setting; and without the default ingest pipeline (its only job,
  `event.ingested`, serves Kibana Security's rule, which OpenSearch has not);
- rollover and retention are an Index State Management policy instead of ILM: the same
  rollover (at `rollover_max_age` or 50 GB per primary shard) and deletion `retention`
  after the rollover. It is attached to the data stream's backing indices by its
  `ism_template`, whose pattern ISM matches against the data stream's name for a backing
  index (opensearch-project/index-management, ManagedIndexCoordinator.findIndexLookupName),
  for indices created after the policy; so `setup` puts the policy before the data stream.
  An existing policy is updated with its `if_seq_no`/`if_primary_term`, as ISM requires.
  A cluster without the ISM plugin gets the rest, and `setup` says that nothing rolls
  the data stream over or deletes old alerts there;
- saved objects for OpenSearch Dashboards are built from its own visualization types
  (`zeekndm export dashboards --opensearch`), not Kibana's Lens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from zeekndm.errors import SinkError
from zeekndm.setup import (
    DASHBOARD_DESCRIPTION,
    DASHBOARD_TITLE,
    SEARCH_ID,
    alert_search,
    ensure_data_stream,
    template_body,
)
from zeekndm.sinks.datastream import TEMPLATE_VERSION, ServerError, quote_name
from zeekndm.sinks.opensearch import (
    OpenSearchSettings,
    connection_problem,
    make_client,
    perform,
    verify_info,
)

log = logging.getLogger(__name__)

ISM_POLICY = "zeekndm-alerts"
ISM_PRIORITY = 200  # above a catch-all `logs-*` policy a site may have
INDEX_PATTERN_ID = "zeekndm-alerts"
DASHBOARD_ID = "zeekndm-alerts-overview"


# -- OpenSearch assets --------------------------------------------------------------------
def opensearch_template_body(namespace: str = "default") -> dict:
    """The composable index template for logs-zeekndm.alert-<namespace> on OpenSearch."""
    body = template_body(namespace, ilm=False, index_mode=False)
    del body["allow_auto_create"]
    del body["template"]["settings"]["index"]["default_pipeline"]
    return body


def ism_policy_body(
    namespace: str = "default",
    rollover_max_age: str = "30d",
    retention: str = "365d",
    rollover_min_primary_shard_size: str = "50gb",
) -> dict:
    """Roll over at `rollover_max_age` or the shard size (whichever comes first, as ISM's
    rollover conditions are alternatives), delete `retention` after the rollover."""
    return {
        "policy": {
            "description": f"zeekndm alerts: roll over at {rollover_max_age} or "
            f"{rollover_min_primary_shard_size} per primary shard, delete {retention} after "
            "the rollover (managed by zeekndm setup)",
            "default_state": "hot",
            "states": [
                {
                    "name": "hot",
                    "actions": [
                        {
                            "rollover": {
                                "min_index_age": rollover_max_age,
                                "min_primary_shard_size": rollover_min_primary_shard_size,
                            }
                        }
                    ],
                    "transitions": [
                        {"state_name": "delete", "conditions": {"min_rollover_age": retention}}
                    ],
                },
                {"name": "delete", "actions": [{"delete": {}}], "transitions": []},
            ],
            "ism_template": [
                {"index_patterns": [f"logs-zeekndm.alert-{namespace}"], "priority": ISM_PRIORITY}
            ],
        }
    }


def ism_policy_for(settings: OpenSearchSettings | None) -> dict:
    if settings is None:
        return ism_policy_body()
    return ism_policy_body(settings.namespace, settings.rollover_max_age, settings.retention)


# -- OpenSearch Dashboards saved objects ---------------------------------------------------
def _vis(
    vis_id: str, title: str, vis_type: str, params: dict, aggs: list[dict]
) -> dict:  # fmt: skip
    """A visualization of OpenSearch Dashboards' own (aggregation-based) types, in the
    saved-object format OSD exports: visState as a JSON string, the index pattern as a
    reference (`kibanaSavedObjectMeta.searchSourceJSON.index`)."""
    search = {"query": {"query": "", "language": "kuery"}, "filter": [],
              "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}  # fmt: skip
    return {
        "type": "visualization",
        "id": vis_id,
        "attributes": {
            "title": title,
            "visState": json.dumps(
                {"title": title, "type": vis_type, "params": params, "aggs": aggs}
            ),  # fmt: skip
            "uiStateJSON": "{}",
            "description": "",
            "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search)},
        },
        "references": [
            {
                "name": "kibanaSavedObjectMeta.searchSourceJSON.index",
                "type": "index-pattern",
                "id": INDEX_PATTERN_ID,
            }
        ],
        "migrationVersion": {"visualization": "7.10.0"},
    }


_COUNT_AGG = {"id": "1", "enabled": True, "type": "count", "schema": "metric", "params": {}}


def _terms_agg(agg_id: str, schema: str, field: str, size: int) -> dict:
    return {
        "id": agg_id, "enabled": True, "type": "terms", "schema": schema,
        "params": {"field": field, "size": size, "order": "desc", "orderBy": "1",
                   "otherBucket": True, "otherBucketLabel": "Other", "missingBucket": False,
                   "missingBucketLabel": "Missing"},
    }  # fmt: skip


def _over_time(split_field: str, size: int) -> list[dict]:
    return [
        _COUNT_AGG,
        {"id": "2", "enabled": True, "type": "date_histogram", "schema": "segment",
         "params": {"field": "@timestamp", "interval": "auto", "min_doc_count": 1,
                    "extended_bounds": {}}},
        _terms_agg("3", "group", split_field, size),
    ]  # fmt: skip


def _bars(horizontal: bool = False) -> dict:
    """The params of OSD's vertical (histogram) and horizontal bar charts, stacked."""
    axis_position = "left" if horizontal else "bottom"
    return {
        "type": "horizontal_bar" if horizontal else "histogram",
        "addTooltip": True, "addLegend": True, "legendPosition": "right",
        "times": [], "addTimeMarker": False,
        "categoryAxes": [{"id": "CategoryAxis-1", "type": "category",
                          "position": axis_position, "show": True, "scale": {"type": "linear"},
                          "labels": {"show": True, "truncate": 100}, "title": {}}],
        "valueAxes": [{"id": "ValueAxis-1", "name": "LeftAxis-1", "type": "value",
                       "position": "bottom" if horizontal else "left", "show": True,
                       "scale": {"type": "linear", "mode": "normal"},
                       "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                       "title": {"text": "Alerts"}}],
        "seriesParams": [{"show": True, "type": "histogram", "mode": "stacked",
                          "data": {"label": "Alerts", "id": "1"}, "valueAxis": "ValueAxis-1",
                          "drawLinesBetweenPoints": True, "showCircles": True}],
        "grid": {"categoryLines": False},
    }  # fmt: skip


def _pie(donut: bool) -> dict:
    labels = {"show": False, "values": True, "last_level": True, "truncate": 100}
    return {"type": "pie", "addTooltip": True, "addLegend": True, "legendPosition": "right",
            "isDonut": donut, "labels": labels}  # fmt: skip


def opensearch_dashboard_objects() -> list[dict]:
    """The index pattern, the alert table (a saved search), five visualizations and the
    overview dashboard, for OpenSearch Dashboards 2.x."""
    index_pattern = {
        "type": "index-pattern",
        "id": INDEX_PATTERN_ID,
        "attributes": {"title": "logs-zeekndm.alert-*", "timeFieldName": "@timestamp"},
        "references": [],
        "migrationVersion": {"index-pattern": "7.6.0"},
    }
    search = alert_search(INDEX_PATTERN_ID, version=1)
    search["migrationVersion"] = {"search": "7.9.3"}
    visualizations = [
        _vis("zeekndm-alerts-by-model", "zeekndm: alerts over time by model", "histogram",
             _bars(), _over_time("rule.name", 10)),
        _vis("zeekndm-alerts-by-severity", "zeekndm: alerts over time by severity", "histogram",
             _bars(), _over_time("zeekndm.severity_name", 4)),
        _vis("zeekndm-top-sources", "zeekndm: top scanning sources", "horizontal_bar",
             _bars(horizontal=True), [_COUNT_AGG, _terms_agg("2", "segment", "source.ip", 15)]),
        # zeekndm.ports, not destination.port: ECS's destination.port holds one port and is
        # only set when the model watches one (LDAP's watches five)
        _vis("zeekndm-top-ports", "zeekndm: top destination ports", "pie", _pie(True),
             [_COUNT_AGG, _terms_agg("2", "segment", "zeekndm.ports", 10)]),
        _vis("zeekndm-mitre", "zeekndm: MITRE ATT&CK techniques", "pie", _pie(False),
             [_COUNT_AGG, _terms_agg("2", "segment", "threat.tactic.name", 10),
              _terms_agg("3", "segment", "threat.technique.name", 10)]),
    ]  # fmt: skip
    grid = [(0, 0, 24, 14), (24, 0, 24, 14), (0, 14, 16, 14), (16, 14, 16, 14), (32, 14, 16, 14)]
    panels, references = [], []
    for i, (vis, (x, y, w, h)) in enumerate(zip(visualizations, grid)):
        panels.append({"panelIndex": str(i + 1), "gridData": {"x": x, "y": y, "w": w, "h": h,
                       "i": str(i + 1)}, "embeddableConfig": {}, "version": "2.0.0",
                       "panelRefName": f"panel_{i}"})  # fmt: skip
        references.append({"name": f"panel_{i}", "type": "visualization", "id": vis["id"]})
    n = len(visualizations)
    panels.append({"panelIndex": str(n + 1), "gridData": {"x": 0, "y": 28, "w": 48, "h": 20,
                   "i": str(n + 1)}, "embeddableConfig": {}, "version": "2.0.0",
                   "panelRefName": f"panel_{n}"})  # fmt: skip
    references.append({"name": f"panel_{n}", "type": "search", "id": SEARCH_ID})
    dashboard = {
        "type": "dashboard",
        "id": DASHBOARD_ID,
        "attributes": {
            "title": DASHBOARD_TITLE,
            "description": DASHBOARD_DESCRIPTION,
            "hits": 0,
            "panelsJSON": json.dumps(panels),
            "optionsJSON": json.dumps({"hidePanelTitles": False, "useMargins": True}),
            "version": 1,
            "timeRestore": True,
            "timeFrom": "now-7d",
            "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 60000},
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps(
                    {"query": {"query": "", "language": "kuery"}, "filter": []}
                )
            },
        },
        "references": references,
        "migrationVersion": {"dashboard": "7.9.3"},
    }
    return [index_pattern, search, *visualizations, dashboard]


def opensearch_dashboards_ndjson() -> str:
    """What OSD's saved-objects import (Dashboards Management → Saved objects → Import)
    takes: one object per line."""
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in opensearch_dashboard_objects())


def export_opensearch_asset(name: str, settings: OpenSearchSettings | None = None) -> str:
    """What `zeekndm export NAME --opensearch` (and `export ism-policy`) prints: exactly
    what `setup --opensearch` installs (with the namespace and durations of `settings`)."""
    from zeekndm.errors import ConfigError

    namespace = settings.namespace if settings is not None else "default"
    if name == "template":
        return json.dumps(opensearch_template_body(namespace), indent=2) + "\n"
    if name == "ism-policy":
        return json.dumps(ism_policy_for(settings), indent=2) + "\n"
    if name == "dashboards":
        return opensearch_dashboards_ndjson()
    raise ConfigError(
        f"{name} is Elasticsearch's (OpenSearch has no {name}); with --opensearch choose "
        "template, ism-policy or dashboards"
    )


# -- setup --------------------------------------------------------------------------------
def run_opensearch_setup(
    settings: OpenSearchSettings, client_factory: Callable[[OpenSearchSettings], Any] | None = None
) -> list[str]:
    """Install the ISM policy, the index template and the data stream; one line per step.
    SinkError on failure (one line, redacted)."""
    if client_factory is None:
        client, redact = make_client(settings)
    else:
        from zeekndm.redact import Redactor

        client, redact = client_factory(settings), Redactor()
    name = settings.data_stream
    timeout = settings.request_timeout

    def request(method: str, path: str, body: Any = None, **params: str) -> Any:
        return perform(client, method, path, params=params or None, body=body, timeout=timeout)

    try:
        lines = [verify_info(request("GET", "/"), settings)]
        lines.append(_put_ism_policy(request, settings))
        request("PUT", f"/_index_template/{quote_name(name)}", opensearch_template_body(
            settings.namespace))  # fmt: skip
        lines.append(f"index template {name}: installed (version {TEMPLATE_VERSION})")
        lines.append(ensure_data_stream(request, name))
        return lines
    except SinkError:
        raise
    except Exception as exc:  # noqa: BLE001 - ServerError, NoAnswer, a connection lost
        raise connection_problem(exc, settings, redact) from None
    finally:
        client.close()


def _put_ism_policy(request: Callable[..., Any], settings: OpenSearchSettings) -> str:
    """Create or update the policy; a line saying which (or that ISM is not installed)."""
    path = f"/_plugins/_ism/policies/{ISM_POLICY}"
    try:
        current = request("GET", path)
    except ServerError as exc:
        if exc.status == 404 and "no handler found" not in str(exc.error):
            current = None  # no such policy yet
        elif exc.status in (400, 404, 405) and "no handler found" in str(exc.error):
            return (
                f"ism policy {ISM_POLICY}: skipped (the Index State Management plugin is not "
                "installed on this cluster: nothing will roll the data stream over or delete "
                f"alerts after {settings.retention}; install opensearch-index-management, "
                "then run setup again)"
            )
        else:
            raise
    body = ism_policy_for(settings)
    if current is None:
        request("PUT", path, body)
        return f"ism policy {ISM_POLICY}: installed"
    request("PUT", path, body, if_seq_no=str(current["_seq_no"]),
            if_primary_term=str(current["_primary_term"]))  # fmt: skip
    return f"ism policy {ISM_POLICY}: updated"
