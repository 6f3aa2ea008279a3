"""In-process stand-ins for an Elasticsearch node and for Kibana, for tests and benchmarks.

They behave as a real node does wherever the official client or zeekndm can tell: the
`X-Elastic-Product` header, `compatible-with` media types (and the 400 a node gives for an
incompatible one), index templates, ILM policies, data streams auto-created from a
matching template, `_bulk` with per-item results in the real response shape (create-only
data streams, 409 on a duplicate `_id`, 400 `document_parsing_exception` when a value
contradicts the mapping), basic and API-key authentication. Faults are injected through
methods: whole-request 429/503 for the next N bulk requests, per-item 429s, and `down()` /
`up()` which stop and restart the listener on the same port and cut open connections.
"""

from __future__ import annotations

import base64
import fnmatch
import ipaddress
import json
import re
import socket
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ES_MEDIA = "application/vnd.elasticsearch+json; compatible-with={}"
_COMPAT = re.compile(r"compatible-with\s*=\s*(\d+)")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body wait 40 ms for a delayed ACK

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
        pass

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection)  # type: ignore[attr-defined]

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner = self.server.owner  # type: ignore[attr-defined]
        try:
            status, headers, payload = owner.route(self.command, self.path, self.headers, body)
        except Exception as exc:  # noqa: BLE001 - a stand-in bug must show as a 500
            status, headers, payload = 500, {}, {"error": f"stand-in failure: {exc!r}"}
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class _Standin:
    """Start/stop/down/up around a threaded HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> _Standin:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.owner = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with self._lock:
            conns, self._conns = set(self._conns), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    # an outage: nothing listens on the port and kept-alive connections are cut
    down = stop

    def up(self) -> None:
        if self._server is None:
            self.start()

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)

    def route(self, method: str, path: str, headers: Any, body: bytes) -> Any:
        raise NotImplementedError


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class ElasticsearchStandin(_Standin):
    """A single Elasticsearch node, just enough of it for zeekndm's output and setup."""

    def __init__(
        self,
        version: str = "8.15.0",
        flavor: str = "elasticsearch",  # or "opensearch"
        basic_auth: tuple[str, str] | None = None,
        api_key: str | None = None,
        cluster_name: str = "standin",
    ) -> None:
        super().__init__()
        self.version = version
        self.flavor = flavor
        self.basic_auth = basic_auth
        self.api_key = api_key
        self.cluster_name = cluster_name
        self.templates: dict[str, dict] = {}
        self.ilm: dict[str, dict] = {}
        self.data_streams: dict[str, dict] = {}  # name -> {"indices": [...], "template": ...}
        self.indices: dict[str, dict[str, dict]] = {}  # concrete index -> id -> source
        self.fail_bulk_requests: list[int] = []  # statuses for the next bulk requests
        self.item_429s = 0  # next N bulk items answer 429
        self.bulk_requests = 0

    # -- fault injection -------------------------------------------------------------------
    def fail_next_bulk(self, status: int, times: int = 1) -> None:
        with self._lock:
            self.fail_bulk_requests.extend([status] * times)

    def reject_next_items(self, count: int) -> None:
        with self._lock:
            self.item_429s += count

    # -- test accessors --------------------------------------------------------------------
    def docs(self, name: str) -> dict[str, dict]:
        """Every document of an index or data stream (all backing indices), by _id."""
        with self._lock:
            out: dict[str, dict] = {}
            for index in self._concrete(name):
                out.update(self.indices.get(index, {}))
            return out

    def count(self, name: str) -> int:
        with self._lock:
            return sum(len(self.indices.get(i, {})) for i in self._concrete(name))

    def _concrete(self, name: str) -> list[str]:
        if name in self.data_streams:
            return list(self.data_streams[name]["indices"])
        return [i for i in self.indices if fnmatch.fnmatchcase(i, name)]

    # -- protocol --------------------------------------------------------------------------
    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def _accepted_compat(self) -> set[int]:
        if self.major >= 9:
            return {8, self.major}
        return {self.major} if self.major >= 8 else {7}

    def _headers(self, compat: int | None) -> dict[str, str]:
        if self.flavor == "opensearch":
            return {"content-type": "application/json; charset=UTF-8"}
        return {
            "X-Elastic-Product": "Elasticsearch",
            "content-type": ES_MEDIA.format(compat or min(self.major, 9))
            if compat
            else "application/json",
        }

    def route(self, method: str, path: str, headers: Any, body: bytes) -> Any:
        with self._lock:
            self.requests.append((method, path))
        compat = None
        for h in ("Accept", "Content-Type"):
            m = _COMPAT.search(headers.get(h, "") or "")
            if m:
                compat = int(m.group(1))
        out_headers = self._headers(compat)
        if self.flavor == "elasticsearch" and compat is not None:
            if compat not in self._accepted_compat():
                return (
                    400,
                    out_headers,
                    _error(
                        400,
                        "media_type_header_exception",
                        "Invalid media-type value on headers [Accept, Content-Type]",
                        caused_by={
                            "type": "status_exception",
                            "reason": f"Accept version must be either version {self.major} or "
                            f"{self.major - 1}, but found {compat}.",
                        },
                    ),
                )
        denied = self._authenticate(headers)
        if denied:
            out_headers["WWW-Authenticate"] = 'Basic realm="security", ApiKey'
            return 401, out_headers, denied
        parts = urlsplit(path)
        segs = [unquote(s) for s in parts.path.split("/") if s]
        status, payload = self._dispatch(method, segs, parse_qs(parts.query), body)
        return status, out_headers, payload

    def _authenticate(self, headers: Any) -> dict | None:
        if self.basic_auth is None and self.api_key is None:
            return None
        given = headers.get("Authorization") or ""
        if self.basic_auth and given == _basic(*self.basic_auth):
            return None
        if self.api_key and given == f"ApiKey {self.api_key}":
            return None
        reason = (
            "unable to authenticate user for REST request"
            if given
            else "missing authentication credentials for REST request"
        )
        return _error(401, "security_exception", reason)

    def _dispatch(self, method: str, segs: list[str], query: dict, body: bytes) -> Any:
        with self._lock:
            if not segs:
                return 200, self._info()
            if segs[0] == "_index_template" and len(segs) == 2:
                return self._template(method, segs[1], body)
            if segs[:2] == ["_ilm", "policy"] and len(segs) == 3:
                return self._ilm(method, segs[2], body)
            if segs[0] == "_data_stream" and len(segs) == 2:
                return self._data_stream(method, segs[1])
            if segs[-1] == "_bulk" and method in ("POST", "PUT"):
                return self._bulk(segs[0] if len(segs) == 2 else None, body)
            if len(segs) == 2 and segs[1] == "_refresh":
                return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
            if len(segs) == 2 and segs[1] == "_count":
                if not self._concrete(segs[0]):
                    return 404, _error(
                        404, "index_not_found_exception", f"no such index [{segs[0]}]"
                    )
                return 200, {"count": self.count(segs[0])}
            if len(segs) == 2 and segs[1] == "_search":
                return self._search(segs[0], body)
            if len(segs) == 3 and segs[1] == "_doc" and method == "GET":
                for index in self._concrete(segs[0]):
                    if segs[2] in self.indices.get(index, {}):
                        return 200, {"_index": index, "_id": segs[2], "found": True,
                                     "_source": self.indices[index][segs[2]]}  # fmt: skip
                return 404, {"_index": segs[0], "_id": segs[2], "found": False}
            return 400, _error(
                400, "illegal_argument_exception", f"no handler for {method} /{'/'.join(segs)}"
            )

    def _info(self) -> dict:
        if self.flavor == "opensearch":
            return {
                "name": "node-1",
                "cluster_name": self.cluster_name,
                "version": {"distribution": "opensearch", "number": "2.11.0"},
                "tagline": "The OpenSearch Project: https://opensearch.org/",
            }
        return {
            "name": "node-1",
            "cluster_name": self.cluster_name,
            "cluster_uuid": "standin-uuid",
            "version": {
                "number": self.version,
                "build_flavor": "default",
                "lucene_version": "9.11.1",
                "minimum_wire_compatibility_version": "7.17.0",
            },
            "tagline": "You Know, for Search",
        }

    def _template(self, method: str, name: str, body: bytes) -> Any:
        if method == "PUT":
            tpl = json.loads(body)
            if "index_patterns" not in tpl:
                return 400, _error(400, "action_request_validation_exception",
                                   "Validation Failed: 1: index patterns are missing;")  # fmt: skip
            self.templates[name] = tpl
            return 200, {"acknowledged": True}
        if name not in self.templates:
            return 404, {"index_templates": []} if method == "GET" else {}
        return 200, {"index_templates": [{"name": name, "index_template": self.templates[name]}]}

    def _ilm(self, method: str, name: str, body: bytes) -> Any:
        if method == "PUT":
            policy = json.loads(body)
            if "policy" not in policy:
                return 400, _error(400, "parse_exception", "request body is required")
            old = self.ilm.get(name)
            self.ilm[name] = {"version": (old["version"] + 1) if old else 1,
                              "policy": policy["policy"]}  # fmt: skip
            return 200, {"acknowledged": True}
        if name not in self.ilm:
            return 404, _error(
                404, "resource_not_found_exception", f"Lifecycle policy not found: {name}"
            )
        return 200, {name: self.ilm[name]}

    def _matching_template(self, name: str) -> dict | None:
        best = None
        for tpl in self.templates.values():
            if any(fnmatch.fnmatchcase(name, p) for p in tpl.get("index_patterns", [])):
                if best is None or tpl.get("priority", 0) > best.get("priority", 0):
                    best = tpl
        return best

    def _create_data_stream(self, name: str) -> None:
        day = datetime.now(timezone.utc).strftime("%Y.%m.%d")
        backing = f".ds-{name}-{day}-000001"
        self.data_streams[name] = {"indices": [backing], "template": self._matching_template(name)}
        self.indices[backing] = {}

    def _data_stream(self, method: str, name: str) -> Any:
        if method == "PUT":
            if name in self.data_streams:
                return 400, _error(400, "resource_already_exists_exception",
                                   f"data_stream [{name}] already exists")  # fmt: skip
            tpl = self._matching_template(name)
            if tpl is None or "data_stream" not in tpl:
                reason = f"no matching index template found for data stream [{name}]"
                return 400, _error(400, "illegal_argument_exception", reason)
            self._create_data_stream(name)
            return 200, {"acknowledged": True}
        if name not in self.data_streams:
            return 404, _error(404, "index_not_found_exception", f"no such index [{name}]")
        ds = self.data_streams[name]
        return 200, {"data_streams": [{"name": name, "timestamp_field": {"name": "@timestamp"},
                                       "indices": [{"index_name": i} for i in ds["indices"]],
                                       "status": "GREEN"}]}  # fmt: skip

    def _search(self, name: str, body: bytes) -> Any:
        hits = []
        for index in self._concrete(name):
            for _id, src in self.indices.get(index, {}).items():
                hits.append({"_index": index, "_id": _id, "_source": src})
        return 200, {"hits": {"total": {"value": len(hits), "relation": "eq"}, "hits": hits}}

    # -- bulk ------------------------------------------------------------------------------
    def _bulk(self, default_index: str | None, body: bytes) -> Any:
        self.bulk_requests += 1
        if self.fail_bulk_requests:
            status = self.fail_bulk_requests.pop(0)
            kind = "es_rejected_execution_exception" if status == 429 else "unavailable"
            return status, _error(status, kind, "injected fault")
        lines = [ln for ln in body.split(b"\n") if ln.strip()]
        items = []
        errors = False
        i = 0
        while i < len(lines):
            action = json.loads(lines[i])
            op, meta = next(iter(action.items()))
            source = json.loads(lines[i + 1]) if op != "delete" else None
            i += 2 if op != "delete" else 1
            result = self._bulk_item(op, meta, source, default_index)
            errors = errors or result["status"] >= 300
            items.append({op: result})
        return 200, {"errors": errors, "took": 1, "items": items}

    def _bulk_item(
        self, op: str, meta: dict, source: dict | None, default_index: str | None
    ) -> dict:
        name = meta.get("_index") or default_index
        doc_id = meta.get("_id")
        base = {"_index": name, "_id": doc_id}
        if self.item_429s > 0:
            self.item_429s -= 1
            return {**base, "status": 429, "error": {
                "type": "es_rejected_execution_exception",
                "reason": "rejected execution of coordinating operation (injected)"}}  # fmt: skip
        tpl = self._matching_template(name) if name not in self.indices else None
        is_stream = name in self.data_streams or (tpl is not None and "data_stream" in tpl)
        if is_stream:
            if op != "create":
                return {**base, "status": 400, "error": {
                    "type": "illegal_argument_exception",
                    "reason": "only write ops with an op_type of create are allowed in data "
                              "streams"}}  # fmt: skip
            if not isinstance(source, dict) or "@timestamp" not in source:
                return {**base, "status": 400, "error": {
                    "type": "document_parsing_exception",
                    "reason": "[1:2] failed to parse: data stream timestamp field [@timestamp] "
                              "is missing"}}  # fmt: skip
            if name not in self.data_streams:
                self._create_data_stream(name)
            index = self.data_streams[name]["indices"][-1]
            mapping = _flat_mapping(self.data_streams[name]["template"] or {})
        else:
            index = name
            self.indices.setdefault(index, {})
            mapping = _flat_mapping(tpl or {})
        base["_index"] = index
        if doc_id is None:
            doc_id = f"auto-{len(self.indices[index]) + 1}"
            base["_id"] = doc_id
        problem = _mapping_problem(source or {}, mapping, doc_id)
        if problem:
            return {**base, "status": 400, "error": problem}
        docs = self.indices[index]
        if op == "create" and any(
            doc_id in self.indices.get(ix, {}) for ix in self._concrete(name)
        ):
            return {**base, "status": 409, "error": {
                "type": "version_conflict_engine_exception",
                "reason": f"[{doc_id}]: version conflict, document already exists "
                          f"(current version [1])", "index": index}}  # fmt: skip
        created = doc_id not in docs
        docs[doc_id] = source
        return {**base, "_version": 1, "result": "created" if created else "updated",
                "_shards": {"total": 1, "successful": 1, "failed": 0},
                "_seq_no": len(docs) - 1, "_primary_term": 1,
                "status": 201 if created else 200}  # fmt: skip


def _error(status: int, kind: str, reason: str, caused_by: dict | None = None) -> dict:
    err: dict[str, Any] = {"root_cause": [{"type": kind, "reason": reason}], "type": kind,
                           "reason": reason}  # fmt: skip
    if caused_by:
        err["caused_by"] = caused_by
    return {"error": err, "status": status}


def _flat_mapping(template: dict) -> dict[str, str]:
    """`a.b.c` -> type, from an index template's `template.mappings.properties`."""
    props = template.get("template", {}).get("mappings", {}).get("properties", {})
    out: dict[str, str] = {}

    def walk(prefix: str, p: dict) -> None:
        for name, spec in p.items():
            path = f"{prefix}{name}"
            if "properties" in spec:
                out[path] = "object"
                walk(path + ".", spec["properties"])
            else:
                out[path] = spec.get("type", "object")

    walk("", props)
    return out


def _mapping_problem(doc: dict, mapping: dict[str, str], doc_id: str) -> dict | None:
    def values(v: Any) -> list:
        return v if isinstance(v, list) else [v]

    def walk(prefix: str, obj: dict) -> dict | None:
        for name, value in obj.items():
            path = f"{prefix}{name}"
            kind = mapping.get(path)
            if kind is None:
                if isinstance(value, dict):
                    found = walk(path + ".", value)
                    if found:
                        return found
                continue
            for v in values(value):
                if v is None:
                    continue
                if kind == "object":
                    if not isinstance(v, dict):
                        return _parse_error(path, "object", v, doc_id, "tried to parse field as "
                                            "object, but found a concrete value")  # fmt: skip
                    found = walk(path + ".", v)
                    if found:
                        return found
                    continue
                bad = _bad_value(kind, v)
                if bad:
                    return _parse_error(path, kind, v, doc_id, bad)
        return None

    return walk("", doc)


def _bad_value(kind: str, v: Any) -> str | None:
    if isinstance(v, dict) and kind != "flattened":
        return "Can't get text on a START_OBJECT at 1:1"
    if kind == "ip":
        try:
            ipaddress.ip_address(str(v))
        except ValueError:
            return f"'{v}' is not an IP string literal."
    elif kind in ("long", "integer", "short", "byte", "unsigned_long"):
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            return f'For input string: "{v}"'
        try:
            int(float(v))
        except ValueError:
            return f'For input string: "{v}"'
    elif kind in ("float", "double", "scaled_float", "half_float"):
        try:
            float(v)
        except (TypeError, ValueError):
            return f'For input string: "{v}"'
    elif kind == "date":
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return None
        try:
            datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        except ValueError:
            return f"failed to parse date field [{v}] with format [strict_date_optional_time]"
    elif kind == "boolean":
        if not isinstance(v, bool) and v not in ("true", "false"):
            return f"Failed to parse value [{v}] as only [true] or [false] are allowed."
    return None


def _parse_error(path: str, kind: str, value: Any, doc_id: str, cause: str) -> dict:
    return {
        "type": "document_parsing_exception",
        "reason": f"[1:2] failed to parse field [{path}] of type [{kind}] in document with id "
        f"'{doc_id}'. Preview of field's value: '{value}'",
        "caused_by": {"type": "illegal_argument_exception", "reason": cause},
    }


class KibanaStandin(_Standin):
    """Kibana's saved-objects import and status APIs."""

    def __init__(
        self,
        version: str = "8.15.0",
        basic_auth: tuple[str, str] | None = None,
        strips_xsrf: bool = False,  # a proxy that drops kbn-xsrf: every import fails with 400
    ) -> None:
        super().__init__()
        self.version = version
        self.basic_auth = basic_auth
        self.strips_xsrf = strips_xsrf
        self.objects: dict[tuple[str, str], dict] = {}
        self.imports = 0

    def route(self, method: str, path: str, headers: Any, body: bytes) -> Any:
        with self._lock:
            self.requests.append((method, path))
        h = {"content-type": "application/json; charset=utf-8", "kbn-name": "kibana"}
        if self.basic_auth and headers.get("Authorization") != _basic(*self.basic_auth):
            message = "[security_exception]: unable to authenticate user"
            return 401, h, {"statusCode": 401, "error": "Unauthorized", "message": message}
        parts = urlsplit(path)
        if parts.path == "/api/status" and method == "GET":
            return 200, h, {"name": "kibana", "version": {"number": self.version},
                            "status": {"overall": {"level": "available"}}}  # fmt: skip
        if parts.path == "/api/saved_objects/_import" and method == "POST":
            if self.strips_xsrf or not headers.get("kbn-xsrf"):
                return 400, h, {"statusCode": 400, "error": "Bad Request",
                                "message": "Request must contain a kbn-xsrf header."}  # fmt: skip
            overwrite = parse_qs(parts.query).get("overwrite", ["false"])[0] == "true"
            try:
                ndjson = _multipart_file(headers.get("Content-Type", ""), body)
            except ValueError as exc:
                return 400, h, {"statusCode": 400, "error": "Bad Request", "message": str(exc)}
            return 200, h, self._import(ndjson, overwrite)
        return 404, h, {"statusCode": 404, "error": "Not Found", "message": "Not Found"}

    def _import(self, ndjson: bytes, overwrite: bool) -> dict:
        ok, errors = [], []
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
                if key in self.objects and not overwrite:
                    errors.append({"id": obj["id"], "type": obj["type"], "title": title,
                                   "error": {"type": "conflict"}})  # fmt: skip
                    continue
                self.objects[key] = obj
                ok.append({"type": obj["type"], "id": obj["id"], "meta": {"title": title},
                           **({"overwrite": True} if overwrite else {})})  # fmt: skip
        return {"success": not errors, "successCount": len(ok), "successResults": ok,
                **({"errors": errors} if errors else {})}  # fmt: skip


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
