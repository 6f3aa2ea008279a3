"""An in-process Kibana: saved objects import, status, Security rules and their execution.

Checked against elastic/kibana:
- `GET /api/status` reports `version.number` and `version.build_flavor`.
- saved-object import migrates each object from its `typeMigrationVersion`; an object
  newer than the last migration this Kibana knows for its type is refused per object with
  `Document "<id>" belongs to a more recent version of Kibana [<v>] when the last known
  version is [<latest>].` (core-saved-objects-migration-server-internal, document_migrator
  assertCompatibility). Dashboards carry the Lens by-value migrations, whose latest is
  8.9.0 from Kibana 8.9 on.
- 401 for unknown credentials, 403 "Unable to bulk_create ..." for a user without the
  saved-objects privilege; `kbn-xsrf` required; `/s/<space>/` prefixes.
- Security: `POST /api/detection_engine/rules/_import`, `GET /api/detection_engine/rules
  ?rule_id=`, `POST /api/detection_engine/rules/{id}/exceptions` (rule default list),
  `GET`/`DELETE /api/exception_lists/items?item_id=`.
- `run_rules()` executes every enabled query rule the way the security_solution query
  executor does: each run looks back from `now` over `from` on `timestamp_override`
  (falling back to `@timestamp` for documents without it), filters with the KQL query
  and the rule's exceptions, and writes one alert per (rule, source document): a document
  seen again in an overlapping look-back is not promoted twice.
- The prebuilt "External Alerts" rule is elastic/detection-rules
  rules/promotions/external_alerts.toml (rule_id, index, query, from, timestamp_override).
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

from es_standin import _basic, _Standin

EXTERNAL_ALERTS_RULE_ID = "eb079c62-4481-4d6e-9643-3ca499df7aaa"
EXTERNAL_ALERTS = {
    "rule_id": EXTERNAL_ALERTS_RULE_ID,
    "name": "External Alerts",
    "type": "query",
    "language": "kuery",
    "index": ["apm-*-transaction*", "traces-apm*", "auditbeat-*", "filebeat-*", "logs-*",
              "packetbeat-*", "winlogbeat-*"],
    "query": "event.kind:alert and not event.module:(endgame or endpoint or cloud_defend) and "
             "not data_stream.dataset:(m365_defender.alert or m365_defender.incident)",
    "from": "now-2m",
    "interval": "1m",
    "timestamp_override": "event.ingested",
    "rule_name_override": "message",
    "immutable": True,
}  # fmt: skip


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def _duration(expr: str) -> float:
    m = re.fullmatch(r"now-(\d+)([smhd])", expr)
    if not m:
        raise ValueError(f"unsupported from: {expr}")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _parse_ts(v: Any) -> float | None:
    if v is None:
        return None
    return datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()


def _lookup(doc: dict, path: str) -> list:
    node: Any = doc
    parts = path.split(".")
    for i, p in enumerate(parts):
        if isinstance(node, dict) and ".".join(parts[i:]) in node:
            node = node[".".join(parts[i:])]
            break
        if not isinstance(node, dict) or p not in node:
            return []
        node = node[p]
    return node if isinstance(node, list) else [node]


class KQL:
    """The subset of KQL the two promotion rules use: and/or/not, parentheses,
    `field:value`, `field:(a or b)`, quoted values and `*` wildcards."""

    _TOKEN = re.compile(r'\s*(\(|\)|"(?:[^"\\]|\\.)*"|[^\s():]+:|[^\s()]+)')

    def __init__(self, text: str) -> None:
        self.tokens = [t for t in self._TOKEN.findall(text) if t]
        self.pos = 0
        self.tree = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(f"cannot parse KQL near {self.tokens[self.pos :]}")

    def matches(self, doc: dict) -> bool:
        return self._eval(self.tree, doc)

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def _or(self) -> Any:
        node = self._and()
        while self._peek() == "or":
            self._take()
            node = ("or", node, self._and())
        return node

    def _and(self) -> Any:
        node = self._not()
        while self._peek() == "and":
            self._take()
            node = ("and", node, self._not())
        return node

    def _not(self) -> Any:
        if self._peek() == "not":
            self._take()
            return ("not", self._not())
        return self._primary()

    def _primary(self) -> Any:
        tok = self._take()
        if tok == "(":
            node = self._or()
            assert self._take() == ")"
            return node
        if not tok.endswith(":"):
            raise ValueError(f"expected field:value, got {tok}")
        field = tok[:-1]
        if self._peek() == "(":
            self._take()
            values = [self._value()]
            while self._peek() == "or":
                self._take()
                values.append(self._value())
            assert self._take() == ")"
        else:
            values = [self._value()]
        return ("match", field, values)

    def _value(self) -> str:
        tok = self._take()
        return json.loads(tok) if tok.startswith('"') else tok

    def _eval(self, node: Any, doc: dict) -> bool:
        op = node[0]
        if op == "and":
            return self._eval(node[1], doc) and self._eval(node[2], doc)
        if op == "or":
            return self._eval(node[1], doc) or self._eval(node[2], doc)
        if op == "not":
            return not self._eval(node[1], doc)
        _, field, values = node
        have = [str(v) for v in _lookup(doc, field)]
        return any(fnmatch.fnmatchcase(h, v) for h in have for v in values)


class KibanaStandin(_Standin):
    """Kibana's status, saved-objects import and Security detection-engine APIs."""

    def __init__(
        self,
        version: str = "8.15.0",
        basic_auth: tuple[str, str] | None = None,
        strips_xsrf: bool = False,  # a proxy that drops kbn-xsrf: every import fails with 400
        build_flavor: str = "traditional",
        es: Any = None,  # the ElasticsearchStandin the rules read from
        readonly_users: dict[str, str] | None = None,  # authenticate, lack every privilege
        spaces: tuple[str, ...] = ("default",),
        redirect_to: str | None = None,  # every request answers 302 to this URL
    ) -> None:
        super().__init__()
        self.version = version
        self.build_flavor = build_flavor
        self.basic_auth = basic_auth
        self.readonly_users = readonly_users or {}
        self.strips_xsrf = strips_xsrf
        self.es = es
        self.spaces = set(spaces)
        self.redirect_to = redirect_to
        self.objects: dict[tuple[str, str], dict] = {}  # default space, for older tests
        self.space_objects: dict[str, dict[tuple[str, str], dict]] = {"default": self.objects}
        self.imports = 0
        self.auth_headers: list[str | None] = []
        self.rules: dict[str, dict] = {}  # rule_id -> rule
        self.exception_items: dict[str, dict] = {}  # item_id -> item
        self.security_alerts: dict[tuple[str, str, str], dict] = {}  # (rule, index, id)
        self._rlock = threading.RLock()

    # -- setup helpers for tests -----------------------------------------------------------
    def install_external_alerts(self, enabled: bool = True) -> dict:
        """Elastic's prebuilt rules package installed, External Alerts on or off."""
        return self._store_rule({**EXTERNAL_ALERTS, "enabled": enabled})

    def _store_rule(self, rule: dict) -> dict:
        old = self.rules.get(rule["rule_id"])
        rule = {**rule, "id": old["id"] if old else str(uuid.uuid4())}
        rule.setdefault("exceptions_list", old["exceptions_list"] if old else [])
        self.rules[rule["rule_id"]] = rule
        return rule

    # -- the detection engine --------------------------------------------------------------
    def run_rules(self, now: float) -> int:
        """One execution of every enabled query rule at `now`; new Security alerts made."""
        made = 0
        with self._rlock:
            for rule in list(self.rules.values()):
                if rule.get("enabled"):
                    made += self._run_rule(rule, now)
        return made

    def _run_rule(self, rule: dict, now: float) -> int:
        query = KQL(rule["query"])
        since = now - _duration(rule.get("from", "now-6m"))
        override = rule.get("timestamp_override")
        exceptions = [
            e
            for e in self.exception_items.values()
            if e["list_id"] in {x["list_id"] for x in rule.get("exceptions_list", [])}
        ]
        made = 0
        with self.es._lock:
            candidates = []
            for index, docs in self.es.indices.items():
                stream = index[4:].rsplit("-", 2)[0] if index.startswith(".ds-") else index
                if not any(fnmatch.fnmatchcase(stream, p) for p in rule["index"]):
                    continue
                candidates += [(index, _id, doc) for _id, doc in docs.items()]
        for index, _id, doc in candidates:
            stamp = _lookup(doc, override) if override else []
            if not stamp and not rule.get("timestamp_override_fallback_disabled"):
                stamp = _lookup(doc, "@timestamp")
            ts = _parse_ts(stamp[0]) if stamp else None
            if ts is None or not since <= ts <= now or not query.matches(doc):
                continue
            if any(self._excepted(item, doc) for item in exceptions):
                continue
            key = (rule["rule_id"], index, _id)
            if key in self.security_alerts:
                continue
            self.security_alerts[key] = {
                "rule_id": rule["rule_id"],
                "rule_name": _lookup(doc, rule["rule_name_override"])[0]
                if rule.get("rule_name_override") and _lookup(doc, rule["rule_name_override"])
                else rule["name"],
                "source_id": _id,
                "alert_state": (_lookup(doc, "zeekndm.alert_state") or [None])[0],
            }
            made += 1
        return made

    @staticmethod
    def _excepted(item: dict, doc: dict) -> bool:
        for entry in item["entries"]:
            have = [str(v) for v in _lookup(doc, entry["field"])]
            wanted = entry["value"] if isinstance(entry["value"], list) else [entry["value"]]
            hit = any(h in wanted for h in have)
            if (entry.get("operator", "included") == "included") != hit:
                return False
        return True

    # -- HTTP ------------------------------------------------------------------------------
    def route(self, method: str, path: str, headers: Any, body: bytes) -> Any:
        with self._lock:
            self.requests.append((method, path))
            self.auth_headers.append(headers.get("Authorization"))
        h = {"content-type": "application/json; charset=utf-8", "kbn-name": "kibana"}
        if self.redirect_to:
            return 302, {**h, "Location": self.redirect_to + path}, {}
        given = headers.get("Authorization")
        readonly = any(given == _basic(u, p) for u, p in self.readonly_users.items())
        if self.basic_auth and given != _basic(*self.basic_auth) and not readonly:
            message = "[security_exception]: unable to authenticate user"
            return 401, h, {"statusCode": 401, "error": "Unauthorized", "message": message}
        parts = urlsplit(path)
        route = parts.path
        space = "default"
        m = re.match(r"^/s/([^/]+)(/.*)$", route)
        if m:
            space, route = m.group(1), m.group(2)
            if space not in self.spaces:
                return 404, h, {"statusCode": 404, "error": "Not Found",
                                "message": f"Saved object [space/{space}] not found"}  # fmt: skip
        query = parse_qs(parts.query)
        if route == "/api/status" and method == "GET":
            return 200, h, {"name": "kibana", "uuid": "standin",
                            "version": {"number": self.version,
                                        "build_flavor": self.build_flavor},
                            "status": {"overall": {"level": "available"}}}  # fmt: skip
        if method in ("POST", "PUT", "DELETE") and (
            self.strips_xsrf or not headers.get("kbn-xsrf")
        ):
            return 400, h, {"statusCode": 400, "error": "Bad Request",
                            "message": "Request must contain a kbn-xsrf header."}  # fmt: skip
        if route == "/api/saved_objects/_import" and method == "POST":
            if readonly:
                message = "Unable to bulk_create index-pattern,search,dashboard"
                return 403, h, {"statusCode": 403, "error": "Forbidden", "message": message}
            overwrite = query.get("overwrite", ["false"])[0] == "true"
            try:
                ndjson = _multipart_file(headers.get("Content-Type", ""), body)
            except ValueError as exc:
                return 400, h, {"statusCode": 400, "error": "Bad Request", "message": str(exc)}
            return 200, h, self._import(ndjson, overwrite, space)
        if route.startswith("/api/detection_engine/") or route.startswith("/api/exception_lists"):
            if readonly:
                return 403, h, {"statusCode": 403, "error": "Forbidden",
                                "message": "Unauthorized to create rules"}  # fmt: skip
            with self._rlock:
                return self._security(method, route, query, headers, body, h)
        return 404, h, {"statusCode": 404, "error": "Not Found", "message": "Not Found"}

    def _latest_migration(self, kind: str) -> str:
        """The last typeMigrationVersion this Kibana knows for a saved-object type."""
        if kind == "dashboard":
            return "8.9.0" if _version_tuple(self.version) >= (8, 9) else "8.7.0"
        return "8.0.0"

    def _import(self, ndjson: bytes, overwrite: bool, space: str) -> dict:
        ok, errors = [], []
        objects = self.space_objects.setdefault(space, {})
        with self._lock:
            self.imports += 1
            for line in ndjson.splitlines():
                if not line.strip():
                    continue
                obj = json.loads(line)
                if "exportedCount" in obj:  # the export summary line
                    continue
                key = (obj["type"], obj["id"])
                title = obj.get("attributes", {}).get("title", "")
                latest = self._latest_migration(obj["type"])
                declared = obj.get("typeMigrationVersion", "0.0.0")
                if _version_tuple(declared) > _version_tuple(latest):
                    message = (f'Document "{obj["id"]}" belongs to a more recent version of '
                               f"Kibana [{declared}] when the last known version is "
                               f"[{latest}].")  # fmt: skip
                    errors.append({"id": obj["id"], "type": obj["type"], "title": title,
                                   "meta": {"title": title},
                                   "error": {"type": "unknown", "message": message,
                                             "statusCode": 400}})  # fmt: skip
                    continue
                if key in objects and not overwrite:
                    errors.append({"id": obj["id"], "type": obj["type"], "title": title,
                                   "error": {"type": "conflict"}})  # fmt: skip
                    continue
                objects[key] = obj
                ok.append({"type": obj["type"], "id": obj["id"], "meta": {"title": title},
                           **({"overwrite": True} if overwrite else {})})  # fmt: skip
        return {"success": not errors, "successCount": len(ok), "successResults": ok,
                **({"errors": errors} if errors else {})}  # fmt: skip

    def _security(
        self, method: str, route: str, query: dict, headers: Any, body: bytes, h: dict
    ) -> Any:
        if route == "/api/detection_engine/rules/_import" and method == "POST":
            overwrite = query.get("overwrite", ["false"])[0] == "true"
            try:
                ndjson = _multipart_file(headers.get("Content-Type", ""), body)
            except ValueError as exc:
                return 400, h, {"statusCode": 400, "error": "Bad Request", "message": str(exc)}
            errors, count = [], 0
            for line in ndjson.splitlines():
                if not line.strip():
                    continue
                rule = json.loads(line)
                count += 1
                if rule["rule_id"] in self.rules and not overwrite:
                    errors.append({"rule_id": rule["rule_id"], "error": {
                        "status_code": 409,
                        "message": f'rule_id: "{rule["rule_id"]}" already exists'}})  # fmt: skip
                    continue
                KQL(rule["query"])  # a query Kibana could not parse fails the import
                self._store_rule(rule)
            return 200, h, {"success": not errors, "success_count": count - len(errors),
                            "rules_count": count, "errors": errors,
                            "exceptions_success": True, "exceptions_success_count": 0,
                            "exceptions_errors": []}  # fmt: skip
        if route == "/api/detection_engine/rules" and method == "GET":
            rule_id = query.get("rule_id", [""])[0]
            if rule_id not in self.rules:
                return 404, h, {"status_code": 404, "message": f'rule_id: "{rule_id}" not found'}
            return 200, h, self.rules[rule_id]
        m = re.fullmatch(r"/api/detection_engine/rules/([^/]+)/exceptions", route)
        if m and method == "POST":
            rule = next((r for r in self.rules.values() if r["id"] == m.group(1)), None)
            if rule is None:
                return 404, h, {"status_code": 404, "message": f'Rule "{m.group(1)}" not found'}
            if not rule["exceptions_list"]:
                rule["exceptions_list"] = [{"id": str(uuid.uuid4()), "list_id": str(uuid.uuid4()),
                                            "type": "rule_default",
                                            "namespace_type": "single"}]  # fmt: skip
            list_id = rule["exceptions_list"][0]["list_id"]
            created = []
            for item in json.loads(body)["items"]:
                item_id = item.get("item_id") or str(uuid.uuid4())
                if item_id in self.exception_items:
                    return 409, h, {"status_code": 409, "message": f'exception list item id: '
                                    f'"{item_id}" already exists'}  # fmt: skip
                stored = {**item, "item_id": item_id, "list_id": list_id,
                          "id": str(uuid.uuid4()), "namespace_type": "single"}  # fmt: skip
                self.exception_items[item_id] = stored
                created.append(stored)
            return 200, h, created
        if route == "/api/exception_lists/items":
            item_id = query.get("item_id", [""])[0]
            if item_id not in self.exception_items:
                return 404, h, {"status_code": 404, "message": f'exception list item item_id: '
                                f'"{item_id}" does not exist'}  # fmt: skip
            if method == "DELETE":
                return 200, h, self.exception_items.pop(item_id)
            return 200, h, self.exception_items[item_id]
        return 404, h, {"statusCode": 404, "error": "Not Found", "message": "Not Found"}


def _multipart_file(content_type: str, body: bytes) -> bytes:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if "multipart/form-data" not in content_type or not m:
        raise ValueError("Unsupported Media Type: expected multipart/form-data")
    boundary = b"--" + m.group(1).encode()
    for part in body.split(boundary):
        head, _, content = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            if not re.search(rb'filename="[^"]+\.ndjson"', head):
                raise ValueError("Invalid file extension .json, must be .ndjson")
            return content.rsplit(b"\r\n", 1)[0]
    raise ValueError("[request body.file]: expected value of type [Stream] but got [undefined]")


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
