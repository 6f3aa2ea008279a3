"""What `zeekndm tune` shows: the text report, the JSON document and the YAML overlay.

The overlay is a complete config (`--config OVERLAY` accepts it as it is, and
`check-config` passes): the base config's settings copied, each tuned model's suggested
`threshold.levels` (and `enabled: true` where the base left it off), and the suggested
per-source discards **commented out**, with a header naming the history it came from.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import yaml

from zeekndm import __version__
from zeekndm.detection import STATES
from zeekndm.tune import ModelReport, TuneReport
from zeekndm.tune_stats import character, key_label
from zeekndm.tune_suggest import FACTORS, levels_text, severities

TOP = 10
FILES_LISTED = 20


def isotime(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _what(m) -> str:
    per = m.track_by.replace("_", " and ")
    return f"distinct {m.count} per {per}"


def _history_line(report: TuneReport) -> str:
    span = report.span
    when = (
        f"{isotime(span.first)} .. {isotime(span.last)} ({span.days:.2f} days)"
        if span
        else "no record in range"
    )
    return f"{_plural(len(report.files), 'file')}, {_plural(report.records, 'record')}, {when}"


# -- text --------------------------------------------------------------------------------
def render_text(report: TuneReport, write: Callable[[str], Any]) -> None:
    w = write
    w(f"zeekndm tune: {_history_line(report)}")
    if report.request.engine == "local":
        w(f", {_plural(report.bad_lines, 'bad line')}\n")
    else:
        w(f" (engine {report.request.engine})\n")
    for s in report.read_stats:
        if s.passed_over:
            w(f"  {s.path}: {s.passed_over}, not read\n")
            continue
        bad = ", ".join(f"{r}: {n}" for r, n in s.bad_by_reason.most_common())
        w(
            f"  {s.path}: {s.format or 'unknown'}, {_plural(s.records + s.filtered, 'record')}"
            + (f" ({s.filtered:,} on unwatched ports not parsed)" if s.filtered else "")
            + f", {_plural(s.bad_lines, 'bad line')}"
            + (f" ({bad})" if bad else "")
            + (f"; unreadable rest: {s.unreadable}" if s.unreadable else "")
            + "\n"
        )
    if report.late_records:
        w(f"  {_plural(report.late_records, 'record')} later than the allowed lateness\n")
    if report.engine_note:
        w(f"  {report.engine_note}\n")
    if report.also_run:
        w(f"  also running (enabled in the config, not tuned): {', '.join(report.also_run)}\n")
    for r in report.models:
        w("\n")
        _model_text(r, report, w)
    w(f"\ntune took {report.elapsed:.2f} s")
    if report.elapsed > 0:
        w(f" ({report.records / report.elapsed:,.0f} records/s)")
    w("\n")


def _model_text(r: ModelReport, report: TuneReport, w: Callable[[str], Any]) -> None:
    m = r.model
    t = m.threshold
    w(
        f"model {m.name}: {m.direction}, {_what(m)}, window {t.window:g} s, idle "
        f"{t.idle_timeout:g} s; now {_levels_named(r.suggestion.current)}\n"
    )
    st = r.stats
    w(f"  sources seen: {len(st.sources):,} ({st.records:,} records counted)\n")
    if not st.sources:
        w("  nothing counted: check its ports and direction (`zeekndm replay --funnel`)\n")
    else:
        dist = st.distribution()
        slow = st.distribution(slow=True)
        names = list(dist)
        w("  peak per source".ljust(28) + "".join(f"{n:>8}" for n in names) + "\n")
        w(f"    in {t.window:g} s window".ljust(28) + "".join(f"{dist[n]:>8,}" for n in names))
        w("\n")
        w(
            f"    slow path ({t.idle_timeout:g} s idle)".ljust(28)
            + "".join(f"{slow[n]:>8,}" for n in names)
            + "\n"
        )
        w(
            "  top sources".ljust(40)
            + f"{'peak':>7} {'at':<21}{'slow':>7} {'failed':>7} {'active':>8}  looks\n"
        )
        for key, s in st.top(TOP):
            active = (
                f"{len(s.days)}/{st.span.day_count}d"
                if st.span.last - st.span.first >= 2 * 86400
                else f"{len(s.hours)}/{st.span.hour_count}h"
            )
            looks = character(s, st.span)
            w(
                f"    {key_label(key, m.track_by)[:35]:<36}{s.peak:>7,} {isotime(s.peak_at):<21}"
                f"{s.slow_peak:>7,} {s.failure_share:>7.0%} {active:>8}  "
                f"{'like a scanner' if looks == 'scanner' else looks}\n"
            )
    if r.what_if and not st.sources:
        w("  what-if: no alert with any candidate levels\n")
    elif r.what_if:
        sev = severities(r.suggestion.current)
        days = st.span.days
        w(
            f"  what-if over {days:.2f} days: episodes per day reaching each severity (or "
            "higher), alerts over the history\n"
        )
        w("    levels".ljust(36) + "".join(f"{s:>9}" for s in sev) + f"{'alerts':>9}\n")
        seen = set()
        for label in ["current"] + [lbl for lbl, _ in FACTORS]:
            tally = r.what_if.get(label)
            if tally is None or (label != "suggested" and tally.levels in seen):
                continue
            seen.add(tally.levels)
            episodes = tally.episodes
            per_day = [episodes.get(s, 0) / days for s in sev]
            w(
                f"    {label:<10} {levels_text(tally.levels):<23}"
                + "".join(f"{v:>9.2f}" for v in per_day)
                + f"{tally.total:>9,}\n"
            )
    sg = r.suggestion
    verdict = "suggested" if sg.changed else "suggested (unchanged)"
    w(f"  {verdict}: {_levels_named(sg.levels)}\n")
    for reason in sg.reasons:
        w(f"    - {reason}\n")
    if sg.chronic:
        w("  chronic sources (a discard for each is written commented out in the overlay):\n")
        for c in sg.chronic:
            w(f"    {c.label}: {c.reason}\n")


def _levels_named(levels) -> str:
    return ", ".join(f"{s} {n}" for s, n in levels)


# -- JSON --------------------------------------------------------------------------------
def render_json(report: TuneReport) -> dict[str, Any]:
    span = report.span
    out: dict[str, Any] = {
        "zeekndm": __version__,
        "engine": report.request.engine,
        "history": {
            "files": [
                _file_json(hf, report.read_stats[i] if i < len(report.read_stats) else None)
                for i, hf in enumerate(report.files)
            ],
            "records": report.records,
            "bad_lines": report.bad_lines,
            "late_records": report.late_records,
            "first": span.first if span else None,
            "last": span.last if span else None,
            "days": round(span.days, 6) if span else None,
            "since": report.request.since,
            "until": report.request.until,
        },
        "config": report.request.config.path,
        "also_run": report.also_run,
        "elapsed": round(report.elapsed, 3),
        "note": report.engine_note,
        "models": [_model_json(r) for r in report.models],
    }
    return out


def _file_json(hf, s) -> dict[str, Any]:
    row: dict[str, Any] = {"path": str(hf.path)}
    if s is not None:
        row.update(
            {
                "format": s.format,
                "records": s.records + s.filtered,
                "parsed": s.records,
                "filtered": s.filtered,
                "bad_lines": s.bad_lines,
                "bad_by_reason": dict(s.bad_by_reason),
                "skipped_by_reason": dict(s.skipped_by_reason),
                "unreadable": s.unreadable,
                "passed_over": s.passed_over,
            }
        )
    return row


def _model_json(r: ModelReport) -> dict[str, Any]:
    st = r.stats
    m = r.model
    sg = r.suggestion
    days = st.span.days
    return {
        "name": m.name,
        "direction": m.direction,
        "track_by": m.track_by,
        "count": m.count,
        "window": m.threshold.window,
        "idle_timeout": m.threshold.idle_timeout,
        "sources_seen": len(st.sources),
        "records_counted": st.records,
        "peak": st.distribution(),
        "slow_peak": st.distribution(slow=True),
        "top_sources": [
            {
                "key": key_label(k, m.track_by),
                "character": character(s, st.span),
                "failure_share": round(s.failure_share, 4),
                "answer_share": round(s.answer_share, 4),
                "peak_at_iso": isotime(s.peak_at),
                **s.as_row(),
            }
            for k, s in st.top(TOP)
        ],
        "current": dict(sg.current),
        "suggested": dict(sg.levels),
        "changed": sg.changed,
        "reasons": list(sg.reasons),
        "chronic": [
            {
                "key": c.label,
                "character": c.character,
                "peak": c.peak,
                "reason": c.reason,
                "discard": {c.discard: [c.network]},
            }
            for c in sg.chronic
        ],
        "what_if": {label: t.as_dict(days) for label, t in r.what_if.items()},
    }


def source_rows(report: TuneReport) -> dict[str, dict[str, dict[str, Any]]]:
    """Every (model, key) row: what the engines must agree on."""
    return {
        r.model.name: {
            key_label(k, r.model.track_by): s.as_row() for k, s in r.stats.sources.items()
        }
        for r in report.models
    }


# -- overlay -----------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _dump(data: Any, indent: int) -> list[str]:
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    pad = " " * indent
    return [pad + line for line in text.rstrip("\n").split("\n")]


def render_overlay(report: TuneReport, now: float | None = None) -> str:
    """The YAML overlay (module docstring)."""
    config = report.request.config
    raw = _plain(config.raw)
    models = copy.deepcopy(raw.pop("models", None) or {})
    written = datetime.fromtimestamp(now, timezone.utc) if now else datetime.now(timezone.utc)
    lines = [
        "# zeekndm tune overlay: a complete config, use it as it is with --config",
        f"# (check-config passes). Written by zeekndm {__version__} at "
        f"{written.strftime('%Y-%m-%dT%H:%M:%SZ')} from this history:",
        f"#   {_history_line(report)}",
    ]
    for hf in report.files[:FILES_LISTED]:
        lines.append(f"#   {hf.path}")
    if len(report.files) > FILES_LISTED:
        lines.append(f"#   ... and {len(report.files) - FILES_LISTED} more")
    req = report.request
    if req.since is not None or req.until is not None:
        bounds = []
        if req.since is not None:
            bounds.append(f"since {isotime(req.since)}")
        if req.until is not None:
            bounds.append(f"until {isotime(req.until)}")
        lines.append(f"#   records kept: {', '.join(bounds)}")
    lines.append(
        f"# Base config: {config.path} (its settings are copied below)"
        if config.path
        else "# Base config: the built-in defaults"
    )
    lines.append(f"# Models tuned: {', '.join(r.model.name for r in report.models)}")
    for r in report.models:
        t = r.what_if.get("suggested")
        if t is not None:
            alerts = ", ".join(f"{s} {t.alerts.get(s, 0)}" for s in STATES)
            lines.append(
                f"#   {r.model.name}: {levels_text(r.suggestion.levels)} -> "
                f"{sum(t.alerts.values())} alerts on that history ({alerts})"
            )
    lines.append(
        "# Suggested per-source discards are commented out: tune never allowlists a source"
    )
    lines.append("# on its own. Review each before you uncomment it.")
    lines.append("")
    if raw:
        lines.extend(_dump(raw, 0))
        lines.append("")
    by_name = {r.model.name: r for r in report.models}
    for name, r in by_name.items():
        body = models.get(name)
        if not isinstance(body, dict):
            body = {}
        base = report.request.config.models.get(name)
        if base is None or not base.enabled:
            body["enabled"] = True
        threshold = body.get("threshold")
        if not isinstance(threshold, dict):
            threshold = {}
        threshold.pop("distinct_destinations", None)  # the older name would win over levels
        threshold["levels"] = dict(r.suggestion.levels)
        body["threshold"] = threshold
        models[name] = body
    lines.append("models:")
    if not models:
        lines[-1] = "models: {}"
    for name, body in models.items():
        lines.append(f"  {name}:")
        lines.extend(_dump(body, 4) if body else ["    {}"])
        r = by_name.get(name)
        if r is not None and r.suggestion.chronic:
            lines.extend(_chronic_comment(r, body))
    return "\n".join(lines) + "\n"


def _chronic_comment(r: ModelReport, body: dict) -> list[str]:
    out = ["    # Chronic sources tune found (review; uncomment to discard them):"]
    for c in r.suggestion.chronic:
        out.append(f"    #   {c.label}: {c.reason}")
    discards = body.get("discards") if isinstance(body.get("discards"), dict) else None
    lists: dict[str, list[str]] = {}
    for c in r.suggestion.chronic:
        lists.setdefault(c.discard, []).append(c.network)
    if discards is None:
        out.append("    # discards:")
        for what, nets in lists.items():
            out.append(f"    #   {what}: [{', '.join(nets)}]")
    else:
        for what, nets in lists.items():
            existing = [str(x) for x in discards.get(what, []) or []]
            out.append(
                f"    # (discards is set above: to discard them, make {what} "
                f"[{', '.join(existing + nets)}])"
            )
    return out
