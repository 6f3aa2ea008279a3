"""Shared fixtures.

Real captures live in ../shared/data/real beside the repository (see its SOURCES.md) and
are used by reference, never copied in. On a user's fresh clone they are absent: tests
that need them skip with the reason. Under CI (CI=true) they must be there, so a missing
directory fails instead of silently skipping.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("ZEEKNDM_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


def real_path(relative: str) -> Path:
    """Path of a real capture under ../shared/data/real; skip (or fail under CI) if absent."""
    path = REAL_DATA / relative
    if not path.exists():
        reason = f"real capture {path} not present (needs ../shared/data/real beside the repo)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " and CI=true requires it")
        pytest.skip(reason)
    return path


@pytest.fixture
def real():
    """`real("zeek/zat/conn.log")` -> Path, skipping cleanly outside CI when absent."""
    return real_path


@pytest.fixture
def es():
    """An Elasticsearch-compatible server on 127.0.0.1 (tests/es_standin.py)."""
    from es_standin import ElasticsearchStandin

    server = ElasticsearchStandin().start()
    yield server
    server.stop()


@pytest.fixture
def kibana(request):
    """A Kibana stand-in (saved objects, Security rules), reading from the `es` stand-in."""
    from kibana_standin import KibanaStandin

    server = KibanaStandin(es=request.getfixturevalue("es")).start()
    yield server
    server.stop()


# -- real engines (tests/engines) ---------------------------------------------------------
# Engines start once per run. As soon as collection is over, every engine a selected test
# needs is prepared (one parallel Maven fetch if the cache is cold) and started in the
# background, one after the other in the order the tests first need them: the suite runs
# on one core, a booting JVM on the other (booting them side by side only made each slower
# on 2 cores). A fixture then only waits for its engine. A test needs an engine when it
# uses its `<name>_engine` fixture, or is parametrized with the engine's name
# (test_engine_elasticsearch's `node`).
ENGINE_STARTS: list[str] = []  # "name version answered in N s", printed in the summary
_ENGINE_FUTURES: dict[str, Future] = {}
_ENGINE_STOP = threading.Event()


def unavailable(reason: str):
    """Skip with `reason`, or fail under CI=true, where every optional part must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI=true requires it)", pytrace=False)
    pytest.skip(reason)


def _start_engines(names: list[str]) -> None:
    import engines

    futures = {name: Future() for name in names}
    _ENGINE_FUTURES.update(futures)

    def run() -> None:
        try:
            prepared = engines.prepare_many(names)
        except BaseException as exc:  # noqa: BLE001 - every waiting fixture gets the reason
            for future in futures.values():
                future.set_exception(exc)
            return
        for name in names:
            if _ENGINE_STOP.is_set():
                futures[name].cancel()
            elif isinstance(prepared[name], Exception):
                futures[name].set_exception(prepared[name])
            else:
                try:
                    futures[name].set_result(engines.start(name))
                except BaseException as exc:  # noqa: BLE001 - its fixture re-raises it
                    futures[name].set_exception(exc)

    threading.Thread(target=run, name="engine-starter", daemon=True).start()


def pytest_collection_finish(session):
    import engines

    wanted: dict[str, None] = {}  # in the order of first use
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for name in engines.ENGINES:
            if f"{name}_engine" in item.fixturenames or name in params.values():
                wanted.setdefault(name)
    if wanted:
        _start_engines(list(wanted))


def _engine(name: str):
    import engines

    if name not in _ENGINE_FUTURES:  # requested dynamically: start it now
        _start_engines([name])
    try:
        engine = _ENGINE_FUTURES[name].result()
    except engines.EngineUnavailable as exc:
        unavailable(f"{name} not available here: {exc}")
    ENGINE_STARTS.append(f"{name} {engine.version} answered in {engine.started_in:.1f} s")
    yield engine
    engine.stop()


def pytest_sessionfinish(session):
    """Stop engines started for tests that never ran (-x, a failed collection, Ctrl-C)."""
    _ENGINE_STOP.set()
    for future in _ENGINE_FUTURES.values():
        try:
            future.result().stop()
        except BaseException:  # noqa: BLE001 - cancelled, or its fixture reported why
            pass


@pytest.fixture(scope="session")
def opensearch_engine():
    """OpenSearch 2.19 on 127.0.0.1 (tests/engines), started once per run."""
    yield from _engine("opensearch")


@pytest.fixture(scope="session")
def elasticsearch_engine():
    """A bare Elasticsearch 8.19 node on 127.0.0.1 (tests/engines), started once per run."""
    yield from _engine("elasticsearch")


@pytest.fixture(scope="session")
def elasticsearch9_engine():
    """A bare Elasticsearch 9.x node on the Java 21+ JDK (tests/engines)."""
    yield from _engine("elasticsearch9")


@pytest.fixture(scope="session")
def kafka_engine():
    """A single-node KRaft Kafka 4.x broker on 127.0.0.1 (tests/engines); `.bootstrap`."""
    yield from _engine("kafka")


def pytest_terminal_summary(terminalreporter):
    if ENGINE_STARTS:
        terminalreporter.write_line("engines: " + "; ".join(ENGINE_STARTS))


# -- the two cores (zeekndm.core) ----------------------------------------------------------
CORES = ("python", "native")


def use_core(monkeypatch, name: str) -> None:
    """Read through the pure-Python core or the compiled one for one test; the compiled
    one skips when it was not built (fails under CI=true, where it must be)."""
    from zeekndm import core

    if name == "python":
        monkeypatch.setattr(core, "native", None)
        return
    if core.native is None:
        try:
            from zeekndm import _core
        except ImportError:
            unavailable("the compiled core (zeekndm._core) was not built: no Rust toolchain")
        monkeypatch.setattr(core, "native", _core)


@pytest.fixture(params=CORES)
def core_path(request, monkeypatch):
    """Parametrises a test over both cores; its value is the core's name."""
    use_core(monkeypatch, request.param)
    return request.param
