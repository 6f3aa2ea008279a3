"""`zeekndm tune`: read a history once through the same readers, event clock and
detector as `replay`, and say per model what its thresholds do on this traffic.

Data flow:

    history_files (tune_history) -> read_flows + Pipeline (as replay: prefilter, bad-line
    accounting, event clock) -> Detector with a StatsRecorder (tune_stats) -> per-source
    statistics -> suggest (tune_suggest) -> what-if runs of the detector over the counted
    records -> TuneReport -> text / JSON / overlay / plot (tune_render, tune_plot)

The models run are those `replay --config OVERLAY` would run: the config's enabled
models plus the ones tuned (`--models`; the overlay enables them). So the what-if row of
the suggested levels is what that replay writes, alert for alert (a test checks it).

With `--engine spark` the per-source statistics come from Spark (`tune_spark`), reading
the Zeek TSV logs with zat's `LogToSparkDF`; the suggestion is the same code. The what-if
needs the time-ordered stream on one machine and is not run there.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zeekndm.config import Config
from zeekndm.detect import Detector
from zeekndm.detection import Detection
from zeekndm.enrich import Observer
from zeekndm.errors import ConfigError, ZeekNDMError
from zeekndm.flow import Flow
from zeekndm.models import Model, load_builtin_models
from zeekndm.pipeline import Pipeline
from zeekndm.tune_history import HistoryFile, history_files
from zeekndm.tune_stats import ModelStats, SourceStats, Span, StatsRecorder
from zeekndm.tune_suggest import (
    FACTORS,
    Suggestion,
    Tally,
    candidates,
    clock_tick,
    run_what_if,
    suggest,
    tally,
)

log = logging.getLogger(__name__)

ENGINES = ("local", "spark")


@dataclass
class TuneRequest:
    paths: list[str]
    config: Config
    models: str | None = None  # --models
    since: float | None = None
    until: float | None = None
    engine: str = "local"
    what_if: bool = True


@dataclass
class ModelReport:
    model: Model
    stats: ModelStats
    suggestion: Suggestion
    #: label ("current", "suggested", "x0.5", ...) -> the model's alerts with those levels
    what_if: dict[str, Tally] = field(default_factory=dict)


@dataclass
class TuneReport:
    request: TuneRequest
    files: list[HistoryFile]
    read_stats: list[Any]  # readers.ReadStats, one per file (local engine)
    span: Span | None
    records: int
    models: list[ModelReport]
    also_run: list[str]  # enabled models not tuned (they run, as in the replay)
    elapsed: float
    late_records: int = 0
    engine_note: str | None = None

    @property
    def bad_lines(self) -> int:
        return sum(s.bad_lines for s in self.read_stats)


def tuned_config(config: Config, spec: str | None) -> tuple[Config, list[str]]:
    """The config `replay --config OVERLAY` will run (the tuned models enabled on top of
    the configured ones) and the names of the models tuned."""
    if spec is None:
        names = [m.name for m in config.enabled_models]
        if not names:
            raise ConfigError("no model is enabled: name the ones to tune with --models")
        return config, names
    chosen = config.with_models(spec)  # validates the names ("did you mean")
    names = [m.name for m in chosen.enabled_models]
    models = {
        name: dataclasses.replace(m, enabled=m.enabled or name in names)
        for name, m in config.models.items()
    }
    return dataclasses.replace(config, models=models), names


class _Tap:
    """Stands where the pipeline expects the detector: passes every record on, keeps the
    stream the what-if runs need and tallies the current levels' alerts.

    The stream holds every counted record (the recorder heard it) and, between two of
    them, at most two clock ticks for the records no model counted: the last one that
    made the detector sweep, and the last one that moved its clock. A record no model
    counts changes nothing but the clock; between two counted records nothing but the
    sweeps changes the state, and one sweep at the later time leaves the state a series
    of sweeps up to then would leave (what they end and forget only grows with time), so
    the what-if detector ends up exactly where this one was at each counted record.
    Sweeps are seen as changes of the detector's `_next_sweep`; a detector without it
    gets a tick for every record that moved its clock (exact too, only longer)."""

    def __init__(self, detector: Detector, recorder: StatsRecorder, tallies: dict) -> None:
        self.detector = detector
        self.recorder = recorder
        self.tallies = tallies
        self.stream: list[Flow] = []
        self.keep = True
        self.first = float("inf")
        self.last = float("-inf")
        self._sweep_tick: float | None = None
        self._last_tick: float | None = None
        self._sees_sweeps = hasattr(detector, "_next_sweep")

    @property
    def max_ts(self) -> float:
        return self.detector.max_ts

    @property
    def stats(self):
        return self.detector.stats

    @property
    def models(self) -> list[Model]:
        return self.detector.models

    def _flush(self) -> None:
        if self._sweep_tick is not None:
            self.stream.append(clock_tick(self._sweep_tick))
        if self._last_tick is not None and self._last_tick != self._sweep_tick:
            self.stream.append(clock_tick(self._last_tick))
        self._sweep_tick = self._last_tick = None

    def observe(self, flow: Flow) -> list[Detection]:
        detector = self.detector
        recorder = self.recorder
        recorder.hit = False
        before = detector.max_ts
        sweep_before = detector._next_sweep if self._sees_sweeps else None
        found = detector.observe(flow)
        ts = flow.ts
        if self.keep:
            if recorder.hit:
                self._flush()
                self.stream.append(flow)
            elif detector.max_ts > before:
                if not self._sees_sweeps:
                    self.stream.append(clock_tick(ts))
                else:
                    if detector._next_sweep != sweep_before:
                        self._sweep_tick = ts
                    self._last_tick = ts
        if ts < self.first:
            self.first = ts
        if ts > self.last:
            self.last = ts
        if found:
            tally(found, self.tallies)
        return []

    def finish(self) -> list[Detection]:
        self._flush()
        tally(self.detector.finish(), self.tallies)
        return []


def _floors() -> dict[str, tuple]:
    return {name: m.threshold.levels for name, m in load_builtin_models().items()}


def run_tune(
    request: TuneRequest,
    clock: Callable[[], float] = time.monotonic,
    on_file: Callable[[str], None] | None = None,
) -> TuneReport:
    """Read the history, gather statistics, suggest, run the what-if (module docstring)."""
    from zeekndm.models import watched_ports
    from zeekndm.readers import EmptyInput, ReadStats, read_flows

    started = clock()
    config, tuned = tuned_config(request.config, request.models)
    files = history_files(request.paths, request.since, request.until)
    run_models = config.enabled_models
    floors = _floors()
    if request.engine == "spark":
        from zeekndm.tune_spark import spark_stats

        per_model, span, records, note = spark_stats(
            files, config, [m for m in run_models if m.name in tuned], request
        )
        reports = []
        for m in run_models:
            if m.name in tuned:
                stats = ModelStats(m.name, m.track_by, per_model.get(m.name, {}), span)
                reports.append(ModelReport(m, stats, suggest(m, floors.get(m.name), stats)))
        return TuneReport(
            request,
            files,
            [],
            span,
            records,
            reports,
            [m.name for m in run_models if m.name not in tuned],
            clock() - started,
            engine_note=note,
        )
    if request.engine != "local":
        raise ZeekNDMError(f"--engine {request.engine}: use one of {', '.join(ENGINES)}")
    classifier = config.classifier()
    detector = Detector(run_models, classifier, config.detector)
    recorder = StatsRecorder()
    detector.recorder = recorder
    current = {m.name: Tally(m.threshold.levels) for m in run_models}
    tap = _Tap(detector, recorder, current)
    tap.keep = request.what_if
    pipeline = Pipeline(tap, [], Observer(), event_time=config.event_time)  # type: ignore[arg-type]
    dports = watched_ports(run_models)
    since, until = request.since, request.until
    all_stats = []
    for hf in files:
        name = str(hf.path)
        stats = ReadStats(name)
        all_stats.append(stats)
        if on_file is not None:
            on_file(name)
        try:
            flows = read_flows(name, stats, dports=dports, models=config.models)
        except EmptyInput as exc:
            log.warning("%s; going on with the other files", exc)
            stats.passed_over = "empty"
            continue
        if stats.format == "zeek_notice":
            stats.passed_over = "a notice log, not connection records"
            continue
        items = (f for f in flows if type(f) is Flow)
        if since is not None or until is not None:
            lo = float("-inf") if since is None else since
            hi = float("inf") if until is None else until
            items = (f for f in items if lo <= f.ts < hi)
        pipeline.push_many(items, stats)
    pipeline.finish_input()
    span = Span(tap.first, tap.last) if tap.last >= tap.first else None
    records = sum(s.records + s.filtered for s in all_stats)
    reports = []
    for m in run_models:
        if m.name not in tuned:
            continue
        sources: dict[Any, SourceStats] = recorder.sources.get(m.name, {})
        stats = ModelStats(m.name, m.track_by, sources, span or Span(0.0, 0.0))
        reports.append(ModelReport(m, stats, suggest(m, floors.get(m.name), stats)))
    if request.what_if and span is not None:
        sets: dict[str, dict[str, tuple]] = {label: {} for label, _ in FACTORS}
        for r in reports:
            for label, levels in candidates(r.suggestion).items():
                sets[label][r.model.name] = levels
        results = run_what_if(tap.stream, run_models, sets, classifier, config.detector)
        for r in reports:
            r.what_if["current"] = current[r.model.name]
            for label, _ in FACTORS:
                r.what_if[label] = results[label][r.model.name]
    return TuneReport(
        request,
        files,
        all_stats,
        span,
        records,
        reports,
        [m.name for m in run_models if m.name not in tuned],
        clock() - started,
        late_records=detector.stats.late_records,
    )


def reports_by_name(report: TuneReport) -> dict[str, ModelReport]:
    return {r.model.name: r for r in report.models}


def run_models_of(report: TuneReport) -> Sequence[str]:
    return [r.model.name for r in report.models] + report.also_run
