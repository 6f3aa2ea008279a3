"""In-process stand-ins for an Elasticsearch node and for Kibana, for tests and benchmarks.

They behave as the real servers do wherever zeekndm or the official client can tell, and
each behaviour names the Elastic source it was checked against:

- `GET /` with `version.build_flavor` ("default", or "serverless", whose projects report
  8.11.0) - as Beats decide serverless: elastic/beats libbeat/esleg/eslegclient/
  connection.go (Connection.getVersion).
- routes a serverless project does not have (`_ilm/...`) answer 400
  `{"error": "no handler found for uri [...] and method [PUT]"}`: elastic/elasticsearch
  server/src/main/java/org/elasticsearch/rest/RestController.java (handleBadRequest);
  serverless refuses template settings that are not `ServerlessPublic`
  (index.mode, index.mapping.ignore_malformed and index.mapping.total_fields.limit are:
  IndexSettings.MODE, FieldMapper.IGNORE_MALFORMED_SETTING, MapperService).
- the built-in `logs` template (`logs-*-*`, priority 100, allow_auto_create, ECS dynamic
  mappings, `logs@settings` with ignore_malformed) that creates a data stream when
  nothing of ours is installed: x-pack/plugin/core/template-resources/src/main/resources/
  logs@template.json, logs@settings.json, ecs@mappings.json.
- LogsDB on 9.x: a `logs-*-*` data stream whose template sets no `index.mode` gets
  `index.mode: logsdb` (x-pack/plugin/logsdb/.../LogsdbIndexModeSettingsProvider.java),
  and LogsDB indices default `index.mapping.ignore_malformed` to true
  (FieldMapper.IGNORE_MALFORMED_SETTING): a contradicting value is dropped into
  `_ignored` and the document is accepted.
- ingest pipelines named by `index.default_pipeline` / `index.final_pipeline` (set with
  `{{{_ingest.timestamp}}}`, pipeline with ignore_missing_pipeline), as
  logs@default-pipeline.json uses them.
- data streams: backing indices `.ds-<name>-<date>-<generation>`, mappings fixed when a
  backing index is created, `_rollover`, create-only writes, and `create` with a fixed
  `_id` conflicting (409) only within the write index - after a rollover the same id is
  accepted again, as in Elasticsearch (the id is unique per index, not per data stream).
- security: 401 for unknown credentials; 403 `security_exception` with the reason
  Elasticsearch gives ("action [...] is unauthorized for user [...] ..., this action is
  granted by the cluster privileges [...]"), per request and per bulk item.
- near real time: a search sees a document only after its index refreshed (every second,
  or `_refresh`), while a get or `_mget` by id sees it at once (real time), as the
  Elasticsearch reference describes search and get.
- faults, injected through attributes and methods: whole-request statuses for the next
  bulk requests (or all of them), per-item 429s, a body limit answered 413 as a proxy
  does, a server that drips its answer one byte at a time, a listener that never
  accepts, and `down()` / `up()`.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import ipaddress
import json
import re
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ES_MEDIA = "application/vnd.elasticsearch+json; compatible-with={}"
_COMPAT = re.compile(r"compatible-with\s*=\s*(\d+)")

SUPERUSER = {"cluster": ["all"], "indices": [{"names": ["*"], "privileges": ["all"]}]}

# What grants each action, as Elasticsearch's denial message lists it.
_CLUSTER = {
    "cluster:monitor/main": ["monitor", "manage", "all"],
    "cluster:admin/ilm/put": ["manage_ilm", "manage", "all"],
    "cluster:admin/ilm/get": ["read_ilm", "manage_ilm", "manage", "all"],
    "indices:admin/index_template/put": ["manage_index_templates", "manage", "all"],
    "indices:admin/index_template/get": ["manage_index_templates", "manage", "all"],
    "cluster:admin/ingest/pipeline/put": [
        "manage_ingest_pipelines", "manage_pipeline", "manage", "all"],
    "cluster:admin/ingest/pipeline/get": [
        "read_pipeline", "manage_ingest_pipelines", "manage_pipeline", "manage", "all"],
}  # fmt: skip
_INDEX = {
    "indices:admin/data_stream/create": ["create_index", "manage", "all"],
    "indices:admin/data_stream/get": ["view_index_metadata", "manage", "all"],
    "indices:admin/mappings/get": ["view_index_metadata", "manage", "all"],
    "indices:admin/rollover": ["manage", "all"],
    "indices:data/read/search": ["read", "all"],
    "indices:data/read/mget": ["read", "all"],
    "indices:admin/resolve/index": ["view_index_metadata", "manage", "all"],
    "indices:admin/auto_create": ["auto_configure", "create_index", "manage", "all"],
    "indices:data/write/bulk[s]": ["create_doc", "create", "index", "write", "all"],
}
# Serverless accepts only `ServerlessPublic` index settings in templates.
_SERVERLESS_SETTINGS = {
    "index.mode", "index.mapping.ignore_malformed", "index.mapping.total_fields.limit",
    "index.default_pipeline", "index.final_pipeline", "index.codec",
    "index.mapping.total_fields.ignore_dynamic_beyond_limit",
}  # fmt: skip
_IP_NAME = re.compile(r"(^|\.)ip$|_ip$")

# Elasticsearch's built-in logs template, reduced to what changes zeekndm's documents.
BUILTIN_LOGS_TEMPLATE = {
    "index_patterns": ["logs-*-*"],
    "priority": 100,
    "data_stream": {},
    "allow_auto_create": True,
    "composed_of": ["logs@mappings", "logs@settings", "logs@custom", "ecs@mappings"],
    "template": {
        "settings": {"index": {"mapping": {"ignore_malformed": True},
                               "lifecycle": {"name": "logs@lifecycle"}}},
        "mappings": {"dynamic_templates": [{"ecs_ip": {}}, {"all_strings_to_keywords": {}}],
                     "properties": {"@timestamp": {"type": "date"},
                                    "message": {"type": "match_only_text"}}},
    },
    "_meta": {"description": "default logs template installed by x-pack", "managed": True},
}  # fmt: skip


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
        owner = self.server.owner  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        limit = owner.max_body_bytes
        if limit is not None and length > limit:
            # a proxy's body limit (nginx client_max_body_size): HTML, no product header
            self.rfile.read(length)
            page = b"<html><head><title>413 Request Entity Too Large</title></head></html>"
            self.send_response(413)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        body = self.rfile.read(length) if length else b""
        try:
            status, headers, payload = owner.route(self.command, self.path, self.headers, body)
        except Exception as exc:  # noqa: BLE001 - a stand-in bug must show as a 500
            status, headers, payload = 500, {}, {"error": f"stand-in failure: {exc!r}"}
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"]
        for k, v in headers.items():
            head.append(f"{k}: {v}\r\n")
        head.append(f"Content-Length: {len(data)}\r\n\r\n")
        raw = "".join(head).encode("latin-1") + (data if self.command != "HEAD" else b"")
        drip = owner.drip_seconds
        if not drip:
            self.wfile.write(raw)
            return
        for i in range(len(raw)):  # one byte every `drip` seconds, until stopped
            if owner.stopped:
                return
            self.wfile.write(raw[i : i + 1])
            self.wfile.flush()
            time.sleep(drip)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class _Standin:
    """Start/stop/down/up around a threaded HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.RLock()
        self._silent: socket.socket | None = None
        self.requests: list[tuple[str, str]] = []
        self.max_body_bytes: int | None = None
        self.drip_seconds = 0.0
        self.stopped = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> _Standin:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.owner = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        self._server = server
        self.stopped = False
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped = True
        if self._silent is not None:
            self._silent.close()
            self._silent = None
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
        if self._silent is not None:
            self._silent.close()
            self._silent = None
        if self._server is None:
            self.start()

    def never_accept(self) -> None:
        """A node so overloaded it never accepts: connects land in the backlog, no answer."""
        self.stop()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._silent = s

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)

    def route(self, method: str, path: str, headers: Any, body: bytes) -> Any:
        raise NotImplementedError


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _now_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _flatten(settings: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in settings.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    if out and not all(k.startswith("index.") for k in out):
        out = {k if k.startswith("index.") else f"index.{k}": v for k, v in out.items()}
    return out


class ElasticsearchStandin(_Standin):
    """A single Elasticsearch node (or serverless project), enough of it for zeekndm."""

    def __init__(
        self,
        version: str = "8.15.0",
        flavor: str = "elasticsearch",  # or "opensearch", "serverless"
        basic_auth: tuple[str, str] | None = None,
        api_key: str | None = None,
        cluster_name: str = "standin",
        builtin_templates: bool = True,
        auto_create_index: bool = True,
        logsdb: bool | None = None,  # None: as the version does (9.x on, 8.x off)
        clock: Any = time.time,
    ) -> None:
        super().__init__()
        self.flavor = flavor
        self.version = "8.11.0" if flavor == "serverless" else version
        self.cluster_name = cluster_name
        self.clock = clock
        self.auto_create_index = auto_create_index
        self.logsdb = (self.major >= 9) if logsdb is None else logsdb
        self.users: dict[str, tuple[str, dict]] = {}
        self.api_keys: dict[str, tuple[str, dict]] = {}
        if basic_auth:
            self.add_user(*basic_auth, SUPERUSER)
        if api_key:
            self.add_api_key(api_key, SUPERUSER)
        self.templates: dict[str, dict] = {}
        self.builtin: dict[str, dict] = (
            {"logs": copy.deepcopy(BUILTIN_LOGS_TEMPLATE)} if builtin_templates else {}
        )
        self.ilm: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.data_streams: dict[str, dict] = {}  # name -> {"indices": [...], "generation"}
        self.indices: dict[str, dict[str, dict]] = {}  # concrete index -> id -> source
        self.index_meta: dict[str, dict] = {}  # concrete index -> {"mappings", "settings"}
        self.ignored: dict[str, dict[str, list[str]]] = {}  # index -> id -> _ignored fields
        self.fail_bulk_requests: list[int] = []  # statuses for the next bulk requests
        self.fail_all_bulk: int | None = None  # every bulk request answers this status
        self.item_429s = 0  # next N bulk items answer 429
        self.bulk_requests = 0
        self.searches = 0
        self.mgets = 0
        # near real time: a search sees a document once its index was refreshed (every
        # second, or by `_refresh`); a get or multi-get by id sees it at once
        self.refresh_interval = 1.0
        self._written: dict[str, dict[str, float]] = {}  # index -> id -> when written
        self._refreshed: dict[str, float] = {}  # index -> last explicit refresh

    # -- principals and fault injection ----------------------------------------------------
    def add_user(self, name: str, password: str, role: dict) -> None:
        self.users[name] = (password, role)

    def add_api_key(self, key: str, role: dict, name: str = "zeekndm-key") -> None:
        self.api_keys[key] = (name, role)

    def fail_next_bulk(self, status: int, times: int = 1) -> None:
        with self._lock:
            self.fail_bulk_requests.extend([status] * times)

    def reject_next_items(self, count: int) -> None:
        with self._lock:
            self.item_429s += count

    def rollover(self, name: str) -> str:
        """What ILM's rollover action does: a new write index, mappings from the template now."""
        with self._lock:
            return self._rollover(name)

    # -- test accessors --------------------------------------------------------------------
    def docs(self, name: str) -> dict[str, dict]:
        """Every document of an index or data stream (all backing indices), by _id.

        A data stream can hold the same _id in two backing indices; `count` counts both."""
        with self._lock:
            out: dict[str, dict] = {}
            for index in self._concrete(name):
                out.update(self.indices.get(index, {}))
            return out

    def count(self, name: str) -> int:
        with self._lock:
            return sum(len(self.indices.get(i, {})) for i in self._concrete(name))

    def mapping_of(self, index: str) -> dict[str, str]:
        """Flat `a.b.c -> type` of one concrete index."""
        with self._lock:
            return _flat_props(self.index_meta[index]["mappings"].get("properties", {}))

    def write_index(self, name: str) -> str:
        return self.data_streams[name]["indices"][-1]

    def _concrete(self, name: str) -> list[str]:
        out: list[str] = []
        for part in name.split(","):
            if part in self.data_streams:
                out.extend(self.data_streams[part]["indices"])
            elif part in self.indices:
                out.append(part)
            else:
                out.extend(i for i in self.indices if fnmatch.fnmatchcase(i, part) and i not in out)
                for ds, info in self.data_streams.items():
                    if fnmatch.fnmatchcase(ds, part):
                        out.extend(i for i in info["indices"] if i not in out)
        return out

    # -- protocol --------------------------------------------------------------------------
    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def minor(self) -> int:
        return int(self.version.split(".")[1])

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
        if self.flavor != "opensearch" and compat is not None:
            if compat not in self._accepted_compat():
                accept = headers.get("Accept", "")
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
                            f"{self.major - 1}, but found {compat}. Accept={accept}",
                        },
                    ),
                )
        principal = self._authenticate(headers)
        if isinstance(principal, dict) and "error" in principal:
            out_headers["WWW-Authenticate"] = 'Basic realm="security", ApiKey'
            return 401, out_headers, principal
        parts = urlsplit(path)
        segs = [unquote(s) for s in parts.path.split("/") if s]
        status, payload = self._dispatch(
            method, segs, parse_qs(parts.query), body, principal, parts.path
        )
        return status, out_headers, payload

    def _authenticate(self, headers: Any) -> Any:
        """(name, role) of the caller; a superuser when security is off; an error dict."""
        if not self.users and not self.api_keys:
            return ("_anonymous", SUPERUSER)
        given = headers.get("Authorization") or ""
        for name, (password, role) in self.users.items():
            if given == _basic(name, password):
                return (name, role)
        if given.startswith("ApiKey ") and given[7:] in self.api_keys:
            return self.api_keys[given[7:]]
        reason = (
            "unable to authenticate user for REST request"
            if given
            else "missing authentication credentials for REST request"
        )
        return _error(401, "security_exception", reason)

    def _deny(self, principal: Any, action: str, index: str | None = None) -> dict | None:
        """None when allowed; else the 403 body Elasticsearch gives."""
        name, role = principal
        if index is None:
            granted_by = _CLUSTER[action]
            if set(role.get("cluster", [])) & set(granted_by):
                return None
            where, kind = "", "cluster"
        else:
            granted_by = _INDEX[action]
            refused = [i for i in index.split(",") if not self._granted(role, i, granted_by)]
            if not refused:
                return None
            where, kind = f" on indices [{','.join(refused)}]", "index"
        reason = (
            f"action [{action}] is unauthorized for user [{name}] with effective roles "
            f"[{name}]{where}, this action is granted by the {kind} privileges "
            f"[{','.join(granted_by)}]"
        )
        return _error(403, "security_exception", reason)

    def _granted(self, role: dict, index: str, granted_by: list[str]) -> bool:
        """Privileges on a data stream also cover its backing indices (as in Elasticsearch)."""
        names = {index} | {ds for ds, info in self.data_streams.items() if index in info["indices"]}
        for entry in role.get("indices", []):
            if set(entry.get("privileges", [])) & set(granted_by) and any(
                fnmatch.fnmatchcase(n, p) for n in names for p in entry.get("names", [])
            ):
                return True
        return False

    def _dispatch(
        self, method: str, segs: list[str], query: dict, body: bytes, principal: Any, path: str
    ) -> Any:
        with self._lock:
            if not segs:
                denied = self._deny(principal, "cluster:monitor/main")
                return (403, denied) if denied else (200, self._info())
            if segs[0] == "_ilm":
                if self.flavor == "serverless":
                    return 400, {"error": f"no handler found for uri [{path}] and method "
                                          f"[{method}]"}  # fmt: skip
                if segs[1:2] == ["policy"] and len(segs) == 3:
                    action = "cluster:admin/ilm/put" if method == "PUT" else "cluster:admin/ilm/get"
                    denied = self._deny(principal, action)
                    return (403, denied) if denied else self._ilm_policy(method, segs[2], body)
            if segs[0] == "_index_template" and len(segs) == 2:
                action = f"indices:admin/index_template/{'put' if method == 'PUT' else 'get'}"
                denied = self._deny(principal, action)
                return (403, denied) if denied else self._template(method, segs[1], body)
            if segs[:2] == ["_ingest", "pipeline"] and len(segs) == 3:
                action = f"cluster:admin/ingest/pipeline/{'put' if method == 'PUT' else 'get'}"
                denied = self._deny(principal, action)
                return (403, denied) if denied else self._pipeline(method, segs[2], body)
            if segs[0] == "_data_stream" and len(segs) == 2:
                action = "indices:admin/data_stream/" + ("create" if method == "PUT" else "get")
                denied = self._deny(principal, action, segs[1])
                return (403, denied) if denied else self._data_stream(method, segs[1])
            if segs == ["_mget"] and method in ("GET", "POST"):
                return self._mget(body, principal)
            if segs[:2] == ["_resolve", "index"] and len(segs) == 3:
                denied = self._deny(principal, "indices:admin/resolve/index", segs[2])
                return (403, denied) if denied else (200, self._resolve(segs[2]))
            if segs[-1] == "_bulk" and method in ("POST", "PUT"):
                return self._bulk(segs[0] if len(segs) == 2 else None, body, principal)
            if len(segs) == 2 and segs[1] == "_rollover" and method == "POST":
                denied = self._deny(principal, "indices:admin/rollover", segs[0])
                if denied:
                    return 403, denied
                if segs[0] not in self.data_streams:
                    return 404, _not_found(segs[0])
                old = self.write_index(segs[0])
                new = self._rollover(segs[0])
                return 200, {"acknowledged": True, "shards_acknowledged": True,
                             "old_index": old, "new_index": new, "rolled_over": True,
                             "dry_run": False, "lazy": False, "conditions": {}}  # fmt: skip
            if len(segs) >= 2 and segs[1] == "_settings" and method == "GET":
                denied = self._deny(principal, "indices:admin/mappings/get", segs[0])
                if denied:
                    return 403, denied
                found = self._concrete(segs[0])
                if not found:
                    return 404, _not_found(segs[0])
                return 200, {i: {"settings": {"index": {
                    "creation_date": str(int(self.index_meta[i].get("created", 0) * 1000)),
                    **{k[6:]: v for k, v in self.index_meta[i]["settings"].items()}}}}
                    for i in found}  # fmt: skip
            if len(segs) == 2 and segs[1] == "_mapping" and method == "GET":
                denied = self._deny(principal, "indices:admin/mappings/get", segs[0])
                if denied:
                    return 403, denied
                found = self._concrete(segs[0])
                if not found:
                    return 404, _not_found(segs[0])
                return 200, {i: {"mappings": self.index_meta[i]["mappings"]} for i in found}
            if len(segs) == 2 and segs[1] == "_refresh":
                for index in self._concrete(segs[0]):
                    self._refreshed[index] = self.clock()
                return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
            if len(segs) == 2 and segs[1] == "_count":
                if not self._concrete(segs[0]):
                    return 404, _not_found(segs[0])
                return 200, {"count": self.count(segs[0])}
            if len(segs) == 2 and segs[1] == "_search":
                denied = self._deny(principal, "indices:data/read/search", segs[0])
                return (403, denied) if denied else self._search(segs[0], body, query)
            if len(segs) == 3 and segs[1] == "_doc" and method == "GET":
                for index in self._concrete(segs[0]):
                    if segs[2] in self.indices.get(index, {}):
                        return 200, {"_index": index, "_id": segs[2], "found": True,
                                     "_source": self.indices[index][segs[2]]}  # fmt: skip
                return 404, {"_index": segs[0], "_id": segs[2], "found": False}
            # an unknown route: the real node's RestController answer
            return 400, {"error": f"no handler found for uri [{path}] and method [{method}]"}

    def _info(self) -> dict:
        if self.flavor == "opensearch":
            return {
                "name": "node-1",
                "cluster_name": self.cluster_name,
                "version": {"distribution": "opensearch", "number": "2.11.0"},
                "tagline": "The OpenSearch Project: https://opensearch.org/",
            }
        version = {
            "number": self.version,
            "build_flavor": "serverless" if self.flavor == "serverless" else "default",
            "build_type": "docker",
            "lucene_version": "9.11.1",
            "minimum_wire_compatibility_version": "7.17.0",
        }
        return {
            "name": "serverless" if self.flavor == "serverless" else "node-1",
            "cluster_name": self.cluster_name,
            "cluster_uuid": "standin-uuid",
            "version": version,
            "tagline": "You Know, for Search",
        }

    # -- templates, ILM, pipelines ---------------------------------------------------------
    def _template(self, method: str, name: str, body: bytes) -> Any:
        if method == "PUT":
            tpl = json.loads(body)
            if "index_patterns" not in tpl:
                return 400, _error(400, "action_request_validation_exception",
                                   "Validation Failed: 1: index patterns are missing;")  # fmt: skip
            settings = _flatten(tpl.get("template", {}).get("settings", {}))
            if self.flavor == "serverless":
                refused = sorted(k for k in settings if k not in _SERVERLESS_SETTINGS)
                if refused:
                    return 400, _error(400, "illegal_argument_exception",
                                       f"Settings [{','.join(refused)}] are not available "
                                       "when running in serverless mode")  # fmt: skip
            self.templates[name] = tpl
            self.builtin.pop(name, None)
            return 200, {"acknowledged": True}
        found = self.templates.get(name) or self.builtin.get(name)
        if found is None:
            return 404, _error(404, "resource_not_found_exception",
                               f"index template matching [{name}] not found")  # fmt: skip
        return 200, {"index_templates": [{"name": name, "index_template": found}]}

    def _ilm_policy(self, method: str, name: str, body: bytes) -> Any:
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

    def _pipeline(self, method: str, name: str, body: bytes) -> Any:
        if method == "PUT":
            spec = json.loads(body)
            for proc in spec.get("processors", []):
                kind, conf = next(iter(proc.items()))
                if kind not in ("set", "pipeline"):
                    return 400, _error(400, "parse_exception",
                                       f"No processor type exists with name [{kind}]")  # fmt: skip
            self.pipelines[name] = spec
            return 200, {"acknowledged": True}
        if name not in self.pipelines:
            return 404, {}
        return 200, {name: self.pipelines[name]}

    def _matching_template(self, name: str) -> tuple[str, dict] | None:
        best: tuple[str, dict] | None = None
        for tname, tpl in [*self.templates.items(), *self.builtin.items()]:
            if any(fnmatch.fnmatchcase(name, p) for p in tpl.get("index_patterns", [])):
                if best is None or tpl.get("priority", 0) > best[1].get("priority", 0):
                    best = (tname, tpl)
        return best

    # -- data streams ----------------------------------------------------------------------
    def _new_backing_index(self, name: str, generation: int) -> str:
        day = datetime.fromtimestamp(self.clock(), timezone.utc).strftime("%Y.%m.%d")
        backing = f".ds-{name}-{day}-{generation:06d}"
        found = self._matching_template(name)
        tpl = found[1] if found else {}
        settings = _flatten(tpl.get("template", {}).get("settings", {}))
        builtin = bool(found) and found[0] in self.builtin
        if self.logsdb and "index.mode" not in settings and fnmatch.fnmatchcase(name, "logs-*-*"):
            settings["index.mode"] = "logsdb"  # LogsdbIndexModeSettingsProvider
        mappings = copy.deepcopy(tpl.get("template", {}).get("mappings", {}))
        mappings.setdefault("properties", {})
        self.index_meta[backing] = {
            "mappings": mappings,
            "settings": settings,
            "ecs_dynamic": builtin,
            "template": found[0] if found else None,
            "created": self.clock(),
        }
        self.indices[backing] = {}
        return backing

    def _create_data_stream(self, name: str) -> None:
        found = self._matching_template(name)
        self.data_streams[name] = {"indices": [], "generation": 1,
                                   "template": found[0] if found else None,
                                   "lifecycle": (found[1].get("template", {}).get("lifecycle")
                                                 if found else None)}  # fmt: skip
        self.data_streams[name]["indices"].append(self._new_backing_index(name, 1))

    def _rollover(self, name: str) -> str:
        ds = self.data_streams[name]
        ds["generation"] += 1
        new = self._new_backing_index(name, ds["generation"])
        ds["indices"].append(new)
        return new

    def _data_stream(self, method: str, name: str) -> Any:
        if method == "PUT":
            if name in self.data_streams:
                return 400, _error(400, "resource_already_exists_exception",
                                   f"data_stream [{name}] already exists")  # fmt: skip
            found = self._matching_template(name)
            if found is None or "data_stream" not in found[1]:
                reason = f"no matching index template found for data stream [{name}]"
                return 400, _error(400, "illegal_argument_exception", reason)
            self._create_data_stream(name)
            return 200, {"acknowledged": True}
        if name not in self.data_streams:
            return 404, _not_found(name)
        ds = self.data_streams[name]
        found = self._matching_template(name)  # resolved now, as GetDataStreamAction does
        info: dict[str, Any] = {
            "name": name,
            "timestamp_field": {"name": "@timestamp"},
            "indices": [{"index_name": i, "index_uuid": uuid.uuid5(uuid.NAMESPACE_DNS, i).hex}
                        for i in ds["indices"]],
            "generation": ds["generation"],
            "status": "GREEN",
            "template": found[0] if found else None,
            "hidden": False, "system": False, "allow_custom_routing": False,
            "replicated": False,
        }  # fmt: skip
        lifecycle = self.index_meta[ds["indices"][-1]]["settings"].get("index.lifecycle.name")
        if lifecycle:
            info["ilm_policy"] = lifecycle
        tpl_lifecycle = found[1].get("template", {}).get("lifecycle") if found else None
        if tpl_lifecycle is not None:
            info["lifecycle"] = {"enabled": True, **tpl_lifecycle}
        return 200, {"data_streams": [info]}

    def _mget(self, body: bytes, principal: Any) -> Any:
        """Real-time gets by id: they see a document the moment it is written."""
        self.mgets += 1
        out = []
        for spec in json.loads(body)["docs"]:
            index, _id = spec["_index"], spec["_id"]
            denied = self._deny(principal, "indices:data/read/mget", index)
            if denied:
                out.append({"_index": index, "_id": _id, "error": denied["error"]})
            elif index not in self.indices:
                out.append({"_index": index, "_id": _id, "error": _not_found(index)["error"]})
            else:
                out.append({"_index": index, "_id": _id, "found": _id in self.indices[index]})
        return 200, {"docs": out}

    def _resolve(self, name: str) -> dict:
        streams = [
            {"name": ds, "backing_indices": list(info["indices"]), "timestamp_field": "@timestamp"}
            for ds, info in self.data_streams.items()
            if fnmatch.fnmatchcase(ds, name)
        ]
        indices = [{"name": i, "attributes": ["open"]} for i in self.indices
                   if fnmatch.fnmatchcase(i, name)]  # fmt: skip
        return {"indices": indices, "aliases": [], "data_streams": streams}

    def _search(self, name: str, body: bytes, query: dict) -> Any:
        self.searches += 1
        request = json.loads(body) if body else {}
        concrete = self._concrete(name)
        missing = [p for p in name.split(",") if not self._concrete(p)]
        if missing and query.get("ignore_unavailable", ["false"])[0] != "true":
            return 404, _not_found(missing[0])
        q = request.get("query", {"match_all": {}})
        ids = set(q["ids"]["values"]) if "ids" in q else None
        hits = []
        now = self.clock()
        for index in concrete:
            visible_until = max(self._refreshed.get(index, 0.0), now - self.refresh_interval)
            written = self._written.get(index, {})
            docs = self.indices.get(index, {})
            # an ids query is a term lookup on _id, not a scan (as in Elasticsearch)
            pairs = ((i, docs[i]) for i in ids if i in docs) if ids is not None else docs.items()
            for _id, src in pairs:
                if written.get(_id, 0.0) > visible_until:
                    continue  # not refreshed yet
                hit: dict[str, Any] = {"_index": index, "_id": _id, "_score": 1.0}
                if request.get("_source", True) is not False:
                    hit["_source"] = src
                hits.append(hit)
        size = request.get("size", 10)
        return 200, {"took": 1, "timed_out": False,
                     "hits": {"total": {"value": len(hits), "relation": "eq"},
                              "hits": hits[:size]}}  # fmt: skip

    # -- bulk ------------------------------------------------------------------------------
    def _bulk(self, default_index: str | None, body: bytes, principal: Any) -> Any:
        self.bulk_requests += 1
        status = self.fail_all_bulk
        if status is None and self.fail_bulk_requests:
            status = self.fail_bulk_requests.pop(0)
        if status is not None:
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
            result = self._bulk_item(op, meta, source, default_index, principal)
            errors = errors or result["status"] >= 300
            items.append({op: result})
        return 200, {"errors": errors, "took": 1, "items": items}

    def _bulk_item(
        self, op: str, meta: dict, source: dict | None, default_index: str | None, principal: Any
    ) -> dict:
        name = meta.get("_index") or default_index
        doc_id = meta.get("_id")
        base = {"_index": name, "_id": doc_id}
        if self.item_429s > 0:
            self.item_429s -= 1
            return {**base, "status": 429, "error": {
                "type": "es_rejected_execution_exception",
                "reason": "rejected execution of coordinating operation (injected)"}}  # fmt: skip
        denied = self._deny(principal, "indices:data/write/bulk[s]", name)
        if denied:
            return {**base, "status": 403, "error": denied["error"]}
        if name not in self.data_streams and name not in self.indices:
            found = self._matching_template(name)
            allowed = (
                found[1].get("allow_auto_create", self.auto_create_index)
                if found
                else self.auto_create_index
            )
            if not allowed:
                reason = (
                    f"no such index [{name}] and composable template [{found[0]}] forbids "
                    "index auto creation"
                    if found
                    else f"no such index [{name}] and [action.auto_create_index] ([false]) "
                    "doesn't match"
                )
                return {**base, "status": 404, "error": {
                    "type": "index_not_found_exception", "reason": reason,
                    "index_uuid": "_na_", "index": name}}  # fmt: skip
            denied = self._deny(principal, "indices:admin/auto_create", name)
            if denied:
                return {**base, "status": 403, "error": denied["error"]}
            if found is not None and "data_stream" in found[1]:
                self._create_data_stream(name)
            else:
                self.indices[name] = {}
                self.index_meta[name] = {"mappings": {"properties": {}}, "settings": {},
                                         "ecs_dynamic": False, "template": None}  # fmt: skip
        is_stream = name in self.data_streams
        if is_stream and op != "create":
            return {**base, "status": 400, "error": {
                "type": "illegal_argument_exception",
                "reason": "only write ops with an op_type of create are allowed in data "
                          "streams"}}  # fmt: skip
        index = self.data_streams[name]["indices"][-1] if is_stream else name
        info = self.index_meta[index]
        base["_index"] = index
        source = source if source is not None else {}  # parsed from the body: our own copy
        problem = self._run_pipelines(info["settings"], source)
        if problem:
            return {**base, "status": 400, "error": problem}
        if is_stream and "@timestamp" not in source:
            return {**base, "status": 400, "error": {
                "type": "document_parsing_exception",
                "reason": "[1:2] failed to parse: data stream timestamp field [@timestamp] "
                          "is missing"}}  # fmt: skip
        if doc_id is None:
            doc_id = f"auto-{len(self.indices[index]) + 1}"
            base["_id"] = doc_id
        docs = self.indices[index]
        if op == "create" and doc_id in docs:  # unique per index, not per data stream
            return {**base, "status": 409, "error": {
                "type": "version_conflict_engine_exception",
                "reason": f"[{doc_id}]: version conflict, document already exists "
                          f"(current version [1])", "index": index}}  # fmt: skip
        ignore_malformed = info["settings"].get(
            "index.mapping.ignore_malformed", info["settings"].get("index.mode") == "logsdb"
        )
        problem, ignored = _mapping_problem(
            source, self._flat_of(info), doc_id,
            bool(ignore_malformed),
        )  # fmt: skip
        if problem:
            return {**base, "status": 400, "error": problem}
        if _dynamic_update(info, source):
            info.pop("flat", None)
        if ignored:
            self.ignored.setdefault(index, {})[doc_id] = ignored
        created = doc_id not in docs
        docs[doc_id] = source
        self._written.setdefault(index, {})[doc_id] = self.clock()
        return {**base, "_version": 1, "result": "created" if created else "updated",
                "_shards": {"total": 1, "successful": 1, "failed": 0},
                "_seq_no": len(docs) - 1, "_primary_term": 1,
                "status": 201 if created else 200}  # fmt: skip

    @staticmethod
    def _flat_of(info: dict) -> dict[str, str]:
        if "flat" not in info:
            info["flat"] = _flat_props(info["mappings"].get("properties", {}))
        return info["flat"]

    def _run_pipelines(self, settings: dict, doc: dict) -> dict | None:
        for key in ("index.default_pipeline", "index.final_pipeline"):
            name = settings.get(key)
            if name and name != "_none":
                problem = self._run_pipeline(name, doc, ignore_missing=False)
                if problem:
                    return problem
        return None

    def _run_pipeline(self, name: str, doc: dict, ignore_missing: bool) -> dict | None:
        spec = self.pipelines.get(name)
        if spec is None:
            if ignore_missing:
                return None
            return {"type": "illegal_argument_exception",
                    "reason": f"pipeline with id [{name}] does not exist"}  # fmt: skip
        stamp = _now_iso(self.clock())
        for proc in spec.get("processors", []):
            kind, conf = next(iter(proc.items()))
            if kind == "pipeline":
                problem = self._run_pipeline(
                    conf["name"], doc, bool(conf.get("ignore_missing_pipeline"))
                )
                if problem:
                    return problem
            elif kind == "set":
                if conf.get("copy_from") == "_ingest.timestamp":
                    value: Any = stamp
                else:
                    value = re.sub(r"\{\{\{?_ingest\.timestamp\}?\}\}", stamp, str(conf["value"]))
                _set_path(doc, conf["field"], value, override=conf.get("override", True))
        return None


def _not_found(name: str) -> dict:
    return _error(404, "index_not_found_exception", f"no such index [{name}]")


def _set_path(doc: dict, path: str, value: Any, override: bool) -> None:
    parts = path.split(".")
    node = doc
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    if override or parts[-1] not in node:
        node[parts[-1]] = value


def _error(status: int, kind: str, reason: str, caused_by: dict | None = None) -> dict:
    err: dict[str, Any] = {"root_cause": [{"type": kind, "reason": reason}], "type": kind,
                           "reason": reason}  # fmt: skip
    if caused_by:
        err["caused_by"] = caused_by
    return {"error": err, "status": status}


def _flat_props(props: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, spec in props.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            out[path] = "object"
            out.update(_flat_props(spec["properties"], path + "."))
        else:
            out[path] = spec.get("type", "object")
    return out


def _flat_mapping(template: dict) -> dict[str, str]:
    """`a.b.c` -> type, from an index template's `template.mappings.properties`."""
    return _flat_props(template.get("template", {}).get("mappings", {}).get("properties", {}))


def _dynamic_update(info: dict, doc: dict) -> bool:
    """Map fields seen for the first time, as dynamic mapping does (ecs@mappings: *.ip as
    ip); True when the mapping grew."""
    mappings = info["mappings"]
    if mappings.get("dynamic") is False or mappings.get("dynamic") == "strict":
        return False
    added = []

    def walk(props: dict, obj: dict, prefix: str) -> None:
        for name, value in obj.items():
            path = f"{prefix}{name}"
            sample = value[0] if isinstance(value, list) and value else value
            if isinstance(sample, dict):
                if name not in props:
                    added.append(path)
                node = props.setdefault(name, {"properties": {}})
                if "properties" in node:
                    walk(node["properties"], sample, path + ".")
                continue
            if name in props or sample is None or isinstance(value, list) and not value:
                continue
            added.append(path)
            if isinstance(sample, bool):
                props[name] = {"type": "boolean"}
            elif isinstance(sample, int):
                props[name] = {"type": "long"}
            elif isinstance(sample, float):
                props[name] = {"type": "float"}
            elif info.get("ecs_dynamic") and _IP_NAME.search(path):
                props[name] = {"type": "ip"}
            else:
                props[name] = {"type": "keyword", "ignore_above": 1024}

    walk(mappings.setdefault("properties", {}), doc, "")
    return bool(added)


def _mapping_problem(
    doc: dict, mapping: dict[str, str], doc_id: str, ignore_malformed: bool
) -> tuple[dict | None, list[str]]:
    """(error, ignored fields): with ignore_malformed a bad value is dropped, not refused."""
    ignored: list[str] = []

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
                    malformable = kind not in ("keyword", "text", "match_only_text", "boolean")
                    if ignore_malformed and malformable and not isinstance(v, dict):
                        ignored.append(path)
                        continue
                    return _parse_error(path, kind, v, doc_id, bad)
        return None

    return walk("", doc), ignored


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
