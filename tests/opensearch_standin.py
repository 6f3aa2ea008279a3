"""An OpenSearch stand-in for what the real engine in tests/engines cannot give: Index State
Management (its plugin is not served by the Maven registry this project reaches) and Amazon
OpenSearch Service's SigV4 authentication.

Everything else (data streams, templates, bulk, search, mget) is the Elasticsearch
stand-in's, answering as OpenSearch does (`version.distribution: opensearch`, no
`X-Elastic-Product` header); the real node (tests/test_engine_opensearch.py) proves those.

- **ISM policies** (`PUT`/`GET _plugins/_ism/policies/<id>`): a policy is parsed the way
  the ISM plugin parses it, and refused with its messages, as read in
  opensearch-project/index-management, src/main/kotlin/org/opensearch/indexmanagement/
  indexstatemanagement/: `model/Policy.kt` (parse: the fields it knows, else "Invalid field:
  [x] found in Policy."; description and default_state required; init: transitions point
  to existing states, no duplicate state names, at least one state, a valid default
  state), `model/State.kt` (name, actions, transitions; no action after a delete, no
  transitions in a state that deletes), `ISMActionsParser.kt` (an action object holds one
  action type of the known parsers, plus optional timeout/retry), `model/Transition.kt`
  (state_name required; Conditions: min_index_age, min_doc_count, min_size, cron,
  min_rollover_age, exactly one of them), `action/RolloverActionParser.kt` (min_size,
  min_doc_count, min_index_age, min_primary_shard_size), `DeleteActionParser` (an empty
  object), `model/ISMTemplate.kt` (index_patterns, priority >= 0, last_updated_time; at
  least one pattern). Durations and sizes as OpenSearch's TimeValue and ByteSizeValue read
  them. Creating an existing policy without `if_seq_no`/`if_primary_term` is a 409, as the
  plugin's index request is a create then (TransportIndexPolicyAction).
- **SigV4** (`aws=(access key, secret key, session token, region)`): every request must
  carry an `Authorization: AWS4-HMAC-SHA256 Credential=.../<date>/<region>/es/aws4_request,
  SignedHeaders=..., Signature=...` header whose signature this stand-in recomputes from
  the request it received, following AWS's Signature Version 4 specification (canonical
  request: method, URI-encoded path, sorted query, the signed headers' canonical values,
  the payload's SHA-256 as `x-amz-content-sha256`; string to sign with the credential
  scope; the HMAC-SHA256 key chain from "AWS4" + secret), independently of botocore. A
  request it cannot verify gets Amazon's 403 `{"message": "The request signature we
  calculated does not match ..."}`; a date more than 15 minutes off, `Signature expired`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from es_standin import ElasticsearchStandin, _error

ACTIONS = {
    "allocation", "close", "delete", "force_merge", "index_priority", "notification", "open",
    "read_only", "read_write", "replica_count", "rollup", "rollover", "shrink", "snapshot",
    "transform", "alias", "convert_index_to_remote", "stop_replication", "unfollow",
    "search_only",
}  # fmt: skip
_TIME = re.compile(r"^-?\d+(\.\d+)?(nanos|micros|ms|s|m|h|d)$", re.IGNORECASE)
_BYTES = re.compile(r"^(\d+(\.\d+)?)(b|k|kb|m|mb|g|gb|t|tb|p|pb)$", re.IGNORECASE)
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


class PolicyError(ValueError):
    """What the ISM plugin answers for a policy it cannot parse (400)."""


def parse_policy(doc: Any) -> dict:
    """The policy of a `PUT _plugins/_ism/policies/<id>` body, checked as ISM checks it."""
    if not isinstance(doc, dict) or list(doc) != ["policy"] or not isinstance(doc["policy"], dict):
        raise PolicyError("Failed to parse object: expecting token of type [START_OBJECT]")
    policy = doc["policy"]
    known = {"schema_version", "last_updated_time", "policy_id", "description",
             "error_notification", "default_state", "states", "ism_template", "user"}  # fmt: skip
    for name in policy:
        if name not in known:
            raise PolicyError(f"Invalid field: [{name}] found in Policy.")
    if not isinstance(policy.get("description"), str):
        raise PolicyError("description is null")
    if not isinstance(policy.get("default_state"), str):
        raise PolicyError("default_state is null")
    states = policy.get("states", [])
    if not isinstance(states, list):
        raise PolicyError("Failed to parse object: expecting token of type [START_ARRAY]")
    parsed = [_state(s) for s in states]
    names = [s["name"] for s in parsed]
    for state in parsed:
        for transition in state["transitions"]:
            if transition["state_name"] not in names:
                raise PolicyError(
                    f"Policy contains a transition in state={state['name']} pointing to a "
                    f"nonexistent state={transition['state_name']}"
                )
    if len(set(names)) != len(names):
        raise PolicyError("Policy cannot have duplicate state names")
    if not parsed:
        raise PolicyError("Policy must contain at least one State")
    if policy["default_state"] not in names:
        raise PolicyError("Policy must have a valid default state")
    templates = policy.get("ism_template")
    if templates is not None:
        for template in templates if isinstance(templates, list) else [templates]:
            _ism_template(template)
    return policy


def _state(state: Any) -> dict:
    if not isinstance(state, dict):
        raise PolicyError("Failed to parse object: expecting token of type [START_OBJECT]")
    for name in state:
        if name not in ("name", "actions", "transitions"):
            raise PolicyError(f"Invalid field: [{name}] found in State.")
    if not isinstance(state.get("name"), str):
        raise PolicyError("State name is null")
    if not state["name"].strip():
        raise PolicyError("State must contain a valid name")
    actions = [_action(a) for a in state.get("actions", [])]
    transitions = [_transition(t) for t in state.get("transitions", [])]
    has_delete = False
    for action in actions:
        if has_delete:
            raise PolicyError(
                f"State={state['name']} must not contain an action after a delete action"
            )
        has_delete = action == "delete"
    if has_delete and transitions:
        raise PolicyError(
            f"State={state['name']} cannot contain transitions if using delete action"
        )
    return {"name": state["name"], "actions": actions, "transitions": transitions}


def _action(action: Any) -> str:
    if not isinstance(action, dict):
        raise PolicyError("Failed to parse object: expecting token of type [START_OBJECT]")
    found = None
    for name, value in action.items():
        if name in ("timeout", "retry", "custom"):
            continue
        if name not in ACTIONS:
            raise PolicyError(f"Invalid field: [{name}] found in Actions.")
        if not isinstance(value, dict):
            raise PolicyError("Failed to parse object: expecting token of type [START_OBJECT]")
        if name == "rollover":
            _rollover(value)
        elif name == "delete" and value:
            raise PolicyError("Failed to parse object: expecting token of type [END_OBJECT]")
        found = name
    if found is None:
        raise PolicyError("Action inside state is null")
    return found


def _rollover(conf: dict) -> None:
    for name, value in conf.items():
        if name in ("min_size", "min_primary_shard_size"):
            if _byte_size(value, name) <= 0:
                raise PolicyError(f"Need a {name} greater than 0")
        elif name == "min_index_age":
            _time_value(value, name)
        elif name == "min_doc_count":
            if not isinstance(value, int) or value <= 0:
                raise PolicyError("Need a minDocs greater than 0")
        else:
            raise PolicyError(f"Invalid field: [{name}] found in RolloverAction.")


def _transition(transition: Any) -> dict:
    if not isinstance(transition, dict):
        raise PolicyError("Failed to parse object: expecting token of type [START_OBJECT]")
    for name in transition:
        if name not in ("state_name", "conditions"):
            raise PolicyError(f"Invalid field: [{name}] found in Transition.")
    if not isinstance(transition.get("state_name"), str):
        raise PolicyError("Transition state name is null")
    conditions = transition.get("conditions")
    if conditions is not None:
        given = 0
        for name, value in conditions.items():
            if name in ("min_index_age", "min_rollover_age"):
                _time_value(value, name)
            elif name == "min_doc_count":
                if not isinstance(value, int) or value <= 0:
                    raise PolicyError("Transition doc count condition must be greater than 0")
            elif name == "min_size":
                if _byte_size(value, name) <= 0:
                    raise PolicyError("Transition size condition must be greater than 0")
            elif name != "cron":
                raise PolicyError(f"Invalid field: [{name}] found in Conditions.")
            given += 1
        if given != 1:
            raise PolicyError("Cannot provide more than one Transition condition")
    return {"state_name": transition["state_name"]}


def _ism_template(template: Any) -> None:
    for name in template:
        if name not in ("index_patterns", "priority", "last_updated_time"):
            raise PolicyError(f"Invalid field: [{name}] found in ISMTemplate.")
    patterns = template.get("index_patterns", [])
    if not isinstance(patterns, list):
        raise PolicyError("Failed to parse object: expecting token of type [START_ARRAY]")
    priority = template.get("priority", 0)
    if not isinstance(priority, int) or priority < 0:
        raise PolicyError("Requires priority to be >= 0")
    if not patterns:
        raise PolicyError("Requires at least one index pattern")


def _time_value(value: Any, name: str) -> None:
    if not isinstance(value, str) or not _TIME.match(value):
        raise PolicyError(
            f"failed to parse setting [{name}] with value [{value}] as a time value: unit is "
            "missing or unrecognized"
        )


def _byte_size(value: Any, name: str) -> float:
    m = _BYTES.match(str(value)) if isinstance(value, str) else None
    if not m:
        raise PolicyError(
            f"failed to parse setting [{name}] with value [{value}] as a size in bytes: unit "
            "is missing or unrecognized"
        )
    return float(m.group(1))


# -- SigV4 --------------------------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _uri_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def sigv4_problem(
    method: str, target: str, headers: Any, body: bytes, aws: tuple[str, str, str | None, str],
    now: float, service: str = "es",
) -> str | None:  # fmt: skip
    """None when the request is signed by `aws` = (access key, secret, token, region);
    otherwise Amazon's reason."""
    access_key, secret, token, region = aws
    m = _AUTH.match(headers.get("Authorization") or "")
    if not m:
        return "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'"
    if m["key"] != access_key:
        return "The security token included in the request is invalid."
    if m["region"] != region or m["service"] != service:
        return f"Credential should be scoped to a valid region and to service {service}."
    amz_date = headers.get("X-Amz-Date") or ""
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return "X-Amz-Date is missing or not in the form YYYYMMDD'T'HHMMSS'Z'"
    if abs(signed_at.timestamp() - now) > 15 * 60:
        return f"Signature expired: {amz_date} is now earlier or later than 15 minutes"
    if m["date"] != amz_date[:8]:
        return "Credential should be scoped to the date of X-Amz-Date"
    signed = m["signed"].split(";")
    for required in ("host", "x-amz-date", "x-amz-content-sha256"):
        if required not in signed:
            return f"SignedHeaders must include {required}"
    if headers.get("X-Amz-Content-SHA256") != _sha256(body):
        return "The provided 'x-amz-content-sha256' header does not match what was computed."
    if token is not None:
        if headers.get("X-Amz-Security-Token") != token or "x-amz-security-token" not in signed:
            return "The security token included in the request is invalid."
    parts = urlsplit(target)
    query = "&".join(
        f"{_uri_encode(k)}={_uri_encode(v)}"
        for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True))
    )
    canonical_headers = "".join(
        f"{name}:{' '.join((headers.get(name) or '').split())}\n" for name in signed
    )
    canonical_request = "\n".join([
        method, quote(parts.path or "/", safe="/~"), query, canonical_headers, ";".join(signed),
        headers.get("X-Amz-Content-SHA256") or "",
    ])  # fmt: skip
    scope = f"{m['date']}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, _sha256(canonical_request.encode())]
    )
    key = _hmac(("AWS4" + secret).encode(), m["date"])
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, m["signature"]):
        return (
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return None


class OpenSearchStandin(ElasticsearchStandin):
    """An OpenSearch 2.x node, with the ISM API and, optionally, SigV4 in front of it."""

    def __init__(
        self, version: str = "2.19.1", aws: tuple[str, str, str | None, str] | None = None,
        ism: bool = True, **kw: Any,
    ) -> None:  # fmt: skip
        super().__init__(flavor="opensearch", builtin_templates=False, **kw)
        self.version = version
        self.aws = aws
        self.ism = ism
        self.policies: dict[str, dict] = {}  # id -> {"policy", "seq_no", "primary_term"}
        self.authorizations: list[str] = []  # the Authorization header of each request
        self.signed_headers: list[list[str]] = []
        self._seq = 0

    def _info(self) -> dict:
        return {
            "name": "node-1",
            "cluster_name": self.cluster_name,
            "cluster_uuid": "standin-uuid",
            "version": {"distribution": "opensearch", "number": self.version,
                        "build_type": "tar", "lucene_version": "9.12.1",
                        "minimum_wire_compatibility_version": "7.10.0"},
            "tagline": "The OpenSearch Project: https://opensearch.org/",
        }  # fmt: skip

    def route(self, method: str, path: str, headers: Any, body: bytes) -> Any:
        json_headers = {"content-type": "application/json; charset=UTF-8"}
        if self.aws is not None:
            auth = headers.get("Authorization") or ""
            with self._lock:
                self.authorizations.append(auth)
                m = _AUTH.match(auth)
                self.signed_headers.append(m["signed"].split(";") if m else [])
            problem = sigv4_problem(method, path, headers, body, self.aws, self.clock())
            if problem:
                with self._lock:
                    self.requests.append((method, path))
                return 403, json_headers, {"message": problem}
        segs = [s for s in urlsplit(path).path.split("/") if s]
        if segs[:3] == ["_plugins", "_ism", "policies"] and len(segs) == 4:
            with self._lock:
                self.requests.append((method, path))
                if not self.ism:
                    return 400, json_headers, {"error": f"no handler found for uri [{path}] and "
                                                        f"method [{method}]"}  # fmt: skip
                status, payload = self._policy_answer(method, segs[3], path, body)
            return status, json_headers, payload
        return super().route(method, path, headers, body)

    def _policy_answer(self, method: str, name: str, path: str, body: bytes) -> Any:
        stored = self.policies.get(name)
        if method == "GET":
            if stored is None:
                return 404, _error(404, "status_exception", "Policy not found")
            return 200, {"_id": name, "_version": stored["seq_no"] + 1,
                         "_seq_no": stored["seq_no"], "_primary_term": 1,
                         "policy": stored["policy"]}  # fmt: skip
        if method != "PUT":
            return 400, {"error": f"no handler found for uri [{path}] and method [{method}]"}
        query = dict(parse_qsl(urlsplit(path).query))
        try:
            policy = parse_policy(json.loads(body or b"null"))
        except (PolicyError, ValueError) as exc:
            return 400, _error(400, "illegal_argument_exception", str(exc))
        if stored is not None and (
            query.get("if_seq_no") != str(stored["seq_no"]) or query.get("if_primary_term") != "1"
        ):
            return 409, _error(409, "version_conflict_engine_exception",
                               f"[{name}]: version conflict, document already exists (current "
                               f"version [{stored['seq_no'] + 1}])")  # fmt: skip
        self._seq += 1
        policy = {**policy, "policy_id": name, "last_updated_time": int(time.time() * 1000)}
        self.policies[name] = {"policy": policy, "seq_no": self._seq}
        status = 201 if stored is None else 200
        return status, {"_id": name, "_version": self._seq, "_primary_term": 1,
                        "_seq_no": self._seq, "policy": {"policy": policy}}  # fmt: skip
