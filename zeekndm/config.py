"""The one YAML configuration: networks, detector limits, model overrides, inputs, outputs.

Strict: an unknown key or a wrong type is an error naming `file:line` and the key path
(`models.ldap_scanning_inside_to_outside.threshold.window`), and every problem is
collected in one pass so `zeekndm check-config` can list them all. `run` refuses to
start while any remain.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeekndm.detect import DetectorSettings
from zeekndm.errors import ConfigError, ConfigErrors, ZeekNDMError
from zeekndm.eventtime import EventTimeSettings
from zeekndm.models import Model, ModelErrors, builtin_model_dicts, merge_model
from zeekndm.networks import DEFAULT_INTERNAL, NetworkClassifier, NetworkSettings
from zeekndm.notices import NoticeMapping, load_notice_mappings, notice_mapping_dicts
from zeekndm.yamlfile import FieldReader, LocatedDict, line_of, load_yaml_file

log = logging.getLogger(__name__)

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Config:
    path: str | None = None
    internal_networks: tuple[str, ...] = DEFAULT_INTERNAL
    trust_local_fields: bool = True
    sensor_name: str | None = None
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    event_time: EventTimeSettings = field(default_factory=EventTimeSettings)
    models: dict[str, Model] = field(default_factory=dict)
    #: Zeek's own scan notices as alerts (zeekndm.notices), with `notices:` overrides
    notices: dict[str, NoticeMapping] = field(default_factory=lambda: dict(load_notice_mappings()))
    state_dir: str | None = None
    ndjson_path: str | None = "-"
    elasticsearch: Any = None  # zeekndm.sinks.elasticsearch.ElasticsearchSettings
    opensearch: Any = None  # zeekndm.sinks.opensearch.OpenSearchSettings
    inputs: tuple[Any, ...] = ()  # parsed by zeekndm.live.inputs when live mode is configured
    log_level: str = "info"
    stats_interval: float = 60.0
    log_format: str = "text"
    metrics_listen: str | None = None  # live mode's Prometheus endpoint, HOST:PORT
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    networks: NetworkSettings = field(
        default_factory=lambda: NetworkSettings(networks=(), private_is_internal=True)
    )

    @property
    def enabled_models(self) -> list[Model]:
        return [m for m in self.models.values() if m.enabled]

    def classifier(self) -> NetworkClassifier:
        return NetworkClassifier.from_settings(self.networks)

    def with_models(self, spec: str | None) -> "Config":
        """The config with only the models `spec` names enabled ("a,b" or "all");
        None leaves the configured choice. Raises ConfigError naming unknown models."""
        if spec is None:
            return self
        names = [n.strip() for n in spec.split(",") if n.strip()]
        if not names:
            raise ConfigError("--models needs NAME[,NAME...] or all")
        if names == ["all"]:
            chosen = set(self.models)
        else:
            unknown = [n for n in names if n not in self.models]
            if unknown:
                hints = []
                for n in unknown:
                    close = _close_matches(n, list(self.models), n=1)
                    hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
                raise ConfigError(
                    f"--models: unknown model {', '.join(hints)}; `zeekndm models` lists them"
                )
            chosen = set(names)
        models = {
            name: dataclasses.replace(m, enabled=name in chosen) for name, m in self.models.items()
        }
        return dataclasses.replace(self, models=models)


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a config file (None: built-in defaults).

    Raises ConfigError (ConfigErrors for several problems) and nothing else, whatever the
    file holds: live mode relies on that to keep its running config when a reload fails.
    """
    if path is None:
        data: Any = LocatedDict()
        label = None
    else:
        data = load_yaml_file(path)
        label = str(path)
        if data is None:
            data = LocatedDict()
    errors: list[ZeekNDMError] = []
    try:
        config = parse_config(data, errors, file=label)
    except ZeekNDMError as exc:
        errors.append(exc)
        config = None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as exc:
        # A value of a shape no check anticipated: still a config error naming the file.
        errors.append(
            ConfigError(
                f"invalid configuration ({type(exc).__name__}: {str(exc)[:80]})",
                file=label,
                line=getattr(data, "line", None) or 1,
            )
        )
        config = None
    if errors:
        raise ConfigErrors(errors)
    assert config is not None
    return config


def parse_config(data: Any, errors: list, file: str | None = None) -> Config | None:
    r = FieldReader(data, "", errors, file=file)
    if not r.ok:
        return None
    net_settings = _internal_networks(r)
    trust = r.take("trust_local_fields", bool, default=True)
    sensor_name = r.take("sensor_name", str, default=None)
    detector, event_time = _detector(r)
    models = _models(r)
    notices = _notices(r)
    state_dir = r.take("state_dir", str, default=None)
    ndjson_path, es, opensearch = _output(r)
    inputs = _inputs(r)
    log_level, stats_interval, log_format = _logging(r)
    metrics_listen = _metrics(r)
    r.finish()
    if errors:
        return None
    return Config(
        path=file,
        internal_networks=net_settings.internal,
        networks=net_settings,
        trust_local_fields=trust,
        sensor_name=sensor_name,
        detector=DetectorSettings(trust_local_fields=trust, **detector),
        event_time=event_time,
        models=models,
        notices=notices,
        state_dir=state_dir,
        ndjson_path=ndjson_path,
        elasticsearch=es,
        opensearch=opensearch,
        inputs=inputs,
        log_level=log_level,
        stats_interval=stats_interval,
        log_format=log_format,
        metrics_listen=metrics_listen,
        raw=dict(data),
    )


def _cidrs(values: Any, reader: FieldReader, name: str) -> tuple[str, ...]:
    out = []
    for i, value in enumerate(values or []):
        try:
            out.append(str(ipaddress.ip_network(str(value), strict=False)))
        except ValueError:
            reader.fail(f"{name}[{i}] {value!r} is not a CIDR network", name=name)
    return tuple(out)


def _internal_networks(r: FieldReader) -> NetworkSettings:
    """`internal_networks`: a list of CIDRs (they replace the default), or a mapping
    with `networks`, `private_is_internal`, `external`, `drop` and `proxies`."""
    raw = r.take("internal_networks", (list, dict), default=None)
    if raw is None:
        return NetworkSettings(networks=(), private_is_internal=True)
    if isinstance(raw, list):
        nets = _cidrs(raw, r, "internal_networks")
        return NetworkSettings(networks=nets, private_is_internal=False)
    n = FieldReader(raw, "internal_networks", r.errors, file=r.file)
    nets = _cidrs(n.take("networks", list, default=[]), n, "networks")
    private = n.take("private_is_internal", bool, default=True)
    external = _cidrs(n.take("external", list, default=[]), n, "external")
    drop = _cidrs(n.take("drop", list, default=[]), n, "drop")
    proxies = _cidrs(n.take("proxies", list, default=[]), n, "proxies")
    n.finish()
    if not nets and not private:
        n.fail("no internal network left: list networks or set private_is_internal: true")
    return NetworkSettings(nets, bool(private), external, drop, proxies)


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


#: Upper bound of any duration in the config (seconds): ten years. Beyond it a value is a
#: typo or an attempt to overflow something, never a setting.
MAX_SECONDS = 10 * 365 * 86400.0


def _seconds(low: float, *, inclusive: bool = True):
    """A check for a duration: finite, >= (or >) `low`, at most MAX_SECONDS."""

    def check(v: float) -> str | None:
        if not (v >= low if inclusive else v > low):
            return f"must be {'>=' if inclusive else '>'} {low:g}"
        if v > MAX_SECONDS:
            return f"must be at most {MAX_SECONDS:.0f} s (ten years)"
        return None

    return check


def _detector(r: FieldReader) -> tuple[dict[str, Any], EventTimeSettings]:
    d = FieldReader(r.take("detector", dict, default={}), "detector", r.errors, file=r.file)
    defaults = DetectorSettings()
    clock = EventTimeSettings()
    event_time = EventTimeSettings(
        max_future=_optional_seconds(d, "max_future", clock.max_future),
        max_jump=_optional_seconds(d, "max_time_jump", clock.max_jump),
        confirmations=d.take(
            "time_jump_confirmations",
            int,
            default=clock.confirmations,
            check=lambda v: None if 1 <= v <= 1000 else "must be 1-1000",
        ),
    )
    out = {
        "allowed_lateness": float(
            d.take(
                "allowed_lateness",
                float,
                default=defaults.allowed_lateness,
                check=_seconds(0),
            )
        ),
        "max_tracked_sources": d.take(
            "max_tracked_sources", int, default=defaults.max_tracked_sources, check=_positive
        ),
        "max_destinations_per_source": d.take(
            "max_destinations_per_source",
            int,
            default=defaults.max_destinations_per_source,
            check=_positive,
        ),
        "max_destinations_total": d.take(
            "max_destinations_total",
            int,
            default=defaults.max_destinations_total,
            check=_positive,
        ),
        "sample_size": d.take(
            "sample_size",
            int,
            default=defaults.sample_size,
            check=lambda v: None if 0 <= v <= 100 else "must be 0-100",
        ),
    }
    d.finish()
    return out, event_time


def _optional_seconds(d: FieldReader, name: str, default: float | None) -> float | None:
    """A bound in seconds that `off` (or `false`) switches off; null means the default."""
    if d.has(name) and (d.data[name] is False or d.data[name] == "off"):
        d.raw(name)
        return None
    value = d.take(name, float, default=default, check=_seconds(0, inclusive=False))
    return None if value is None else float(value)


def _models(r: FieldReader) -> dict[str, Model]:
    """Shipped models with the user's overrides applied, plus the user's own models."""
    overrides = r.take("models", dict, default={})
    builtin = builtin_model_dicts()
    models: dict[str, Model] = {}
    for name in overrides or {}:
        if not isinstance(overrides[name], dict):
            r.fail(f"models.{name} must be a mapping of model fields", name="models")
    for name, base in builtin.items():
        override = (overrides or {}).get(name)
        data = merge_model(base, override) if isinstance(override, dict) else base
        source = getattr(override, "file", None) if isinstance(override, dict) else base.file
        model = Model.collect(data, r.errors, source=source, path=f"models.{name}")
        if model is not None:
            models[name] = model
    ids = {m.id: m.name for m in models.values()}
    notice_names = set(notice_mapping_dicts())
    for name, data in (overrides or {}).items():
        if name in builtin or not isinstance(data, dict):
            continue
        if name in notice_names:
            # Before notice mappings had their own schema they were models by name.
            r.errors.append(
                ConfigError(
                    f"{name} maps a Zeek notice, it is not a model: set its fields under "
                    f"notices.{name} (`zeekndm schema --notice` lists them)",
                    file=getattr(data, "file", r.file),
                    line=line_of(overrides, name),
                    key=f"models.{name}",
                )
            )
            continue
        guess = _closest(name, builtin)
        if guess is not None and "id" not in data:
            # An override of a shipped model with its name mistyped, not a new model
            # (a new model needs an id): one error with the likely name, not a pile
            # of "required key is missing".
            r.errors.append(
                ConfigError(
                    f"there is no shipped model {name!r}; did you mean {guess!r}? "
                    "(a new model needs its own id, name, ports, threshold and threat)",
                    file=getattr(data, "file", r.file),
                    line=line_of(overrides, name),
                    key=f"models.{name}",
                )
            )
            continue
        model = Model.collect(
            data, r.errors, source=getattr(data, "file", r.file), path=f"models.{name}"
        )
        if model is None:
            continue
        if model.name != name:
            r.errors.append(
                ConfigError(
                    f"the model's name is {model.name!r}; it must equal its key",
                    file=r.file,
                    line=getattr(data, "line", None),
                    key=f"models.{name}.name",
                )
            )
            continue
        if model.id in ids:
            r.errors.append(
                ConfigError(
                    f"id {model.id} is already used by model {ids[model.id]!r}",
                    file=r.file,
                    line=getattr(data, "line", None),
                    key=f"models.{name}.id",
                )
            )
            continue
        ids[model.id] = name
        models[name] = model
    return models


def _notices(r: FieldReader) -> dict[str, NoticeMapping]:
    """The shipped notice mappings with the user's `notices.<name>` overrides applied
    (nested mappings merge key by key). Only shipped mappings exist: the reader knows
    how to read the evidence of those notice types alone."""
    overrides = r.take("notices", dict, default={}) or {}
    shipped = notice_mapping_dicts()
    for name, data in overrides.items():
        if name in shipped and isinstance(data, dict):
            continue
        if not isinstance(data, dict):
            message = f"notices.{name} must be a mapping of notice-mapping fields"
        else:
            guess = _closest(name, shipped)
            message = f"there is no notice mapping {name!r}" + (
                f"; did you mean {guess!r}?" if guess else f" (there are {', '.join(shipped)})"
            )
        r.errors.append(
            ConfigError(message, file=r.file, line=line_of(overrides, name), key=f"notices.{name}")
        )
    notices: dict[str, NoticeMapping] = {}
    for name, base in shipped.items():
        override = overrides.get(name)
        data = merge_model(base, override) if isinstance(override, dict) else base
        source = getattr(override, "file", None) if isinstance(override, dict) else base.file
        mapping = NoticeMapping.collect(data, r.errors, source=source, path=f"notices.{name}")
        if mapping is None:
            continue
        if mapping.name != name or mapping.notice != shipped[name].get("notice"):
            r.errors.append(
                ConfigError(
                    "a notice mapping's name and notice cannot be changed",
                    file=source,
                    line=line_of(override) if isinstance(override, dict) else None,
                    key=f"notices.{name}",
                )
            )
            continue
        notices[name] = mapping
    return notices


def _closest(name: Any, names: Any) -> str | None:
    """The shipped model name `name` is most likely a typo of, if any."""

    if not isinstance(name, str):
        return None
    found = _close_matches(name, list(names), n=1, cutoff=0.75)
    return found[0] if found else None


def _output(r: FieldReader) -> tuple[str | None, Any, Any]:
    o = FieldReader(r.take("output", dict, default={}), "output", r.errors, file=r.file)
    nd = FieldReader(o.take("ndjson", dict, default={}), "output.ndjson", r.errors, file=r.file)
    enabled = nd.take("enabled", bool, default=True)
    path = nd.take("path", str, default="-")
    nd.finish()
    es_raw = o.take("elasticsearch", dict, default=None)
    os_raw = o.take("opensearch", dict, default=None)
    o.finish()
    return (
        (path if enabled else None),
        parse_elasticsearch(es_raw, r.errors),
        parse_opensearch(os_raw, r.errors),
    )


def parse_elasticsearch(raw: Any, errors: list) -> Any:
    """`output.elasticsearch` (None when absent or `enabled: false`), errors collected."""
    if _store_off(raw):  # the sink module (and what it imports) only when configured
        return None
    from zeekndm.sinks.elasticsearch import ElasticsearchSettings

    return _parse_store(ElasticsearchSettings, raw, errors)


def parse_opensearch(raw: Any, errors: list) -> Any:
    """`output.opensearch` (None when absent or `enabled: false`), errors collected."""
    if _store_off(raw):
        return None
    from zeekndm.sinks.opensearch import OpenSearchSettings

    return _parse_store(OpenSearchSettings, raw, errors)


def _store_off(raw: Any) -> bool:
    """An `output.elasticsearch` / `output.opensearch` section absent or disabled."""
    return raw is None or raw.get("enabled", True) is False


def _parse_store(cls: Any, raw: Any, errors: list) -> Any:
    """Delegate to the sink's own settings class, collecting its errors."""
    if _store_off(raw):
        return None
    data = {k: v for k, v in raw.items() if k != "enabled"}
    try:
        return cls.from_dict(data, key=cls.CONFIG_KEY)
    except ConfigErrors as exc:
        errors.extend(exc.errors)
    except ModelErrors as exc:  # pragma: no cover - defensive
        errors.extend(exc.errors)
    except ConfigError as exc:
        if exc.file is None:
            exc.file = getattr(raw, "file", None)
            exc.line = getattr(raw, "line", None)
        errors.append(exc)
    return None


def _inputs(r: FieldReader) -> tuple[Any, ...]:
    raw = r.take("inputs", list, default=[])
    if not raw:
        return ()
    try:
        from zeekndm.live.inputs import parse_inputs
    except ImportError:  # pragma: no cover - live mode not installed
        r.fail("inputs are not supported by this build", name="inputs")
        return ()
    return tuple(parse_inputs(raw, r.errors, file=r.file))


def _metrics(r: FieldReader) -> str | None:
    """`metrics.listen: HOST:PORT` (live mode's Prometheus endpoint; absent: none)."""
    m = FieldReader(r.take("metrics", dict, default={}), "metrics", r.errors, file=r.file)

    def host_port(v: str) -> str | None:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            return "must be HOST:PORT, for example 127.0.0.1:9477"
        return None

    listen = m.take("listen", str, default=None, check=host_port)
    m.finish()
    return listen


def _logging(r: FieldReader) -> tuple[str, float, str]:
    lg = FieldReader(r.take("logging", dict, default={}), "logging", r.errors, file=r.file)
    level = lg.take(
        "level",
        str,
        default="info",
        check=lambda v: (
            None if v.lower() in LOG_LEVELS else f"must be one of {', '.join(LOG_LEVELS)}"
        ),
    )
    interval = lg.take("stats_interval", float, default=60.0, check=_seconds(0, inclusive=False))
    fmt = lg.take(
        "format",
        str,
        default="text",
        check=lambda v: None if v in LOG_FORMATS else f"must be one of {', '.join(LOG_FORMATS)}",
    )
    lg.finish()
    return (level or "info").lower(), float(interval), fmt or "text"


def _close_matches(word: str, names: Any, **kw: Any) -> list[str]:
    """`difflib.get_close_matches`, imported only for a misspelt name (start-up)."""
    import difflib

    return difflib.get_close_matches(word, names, **kw)
