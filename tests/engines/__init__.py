"""Real OpenSearch, Elasticsearch and Kafka for the test suite, run from Maven Central jars.

Why: every Elasticsearch test used to talk to a stand-in we wrote; these are the engines
themselves (no docker, no distribution download), each in its own JVM with its own
classpath, bound to 127.0.0.1 on a free port, with its home in a temporary directory.

How: `tests/engines/maven/<module>/pom.xml` names the jars. `prepare()` asks Maven for the
classpath once (`dependency:build-classpath`; Maven's local repository caches the jars
between runs) and compiles the launcher classes with javac; both are cached under
`~/.cache/zeekndm/engines/` keyed by the poms, the sources and the JDK, so a later start
runs no Maven at all. `start()` launches the JVM, waits until the engine answers (HTTP
cluster health yellow, or a Kafka Metadata response naming a broker and a controller) and
returns a running `Engine`; `Engine.stop()` sends SIGTERM and waits. The JVM also exits
when its standard input closes, so a test run killed outright leaves no engine behind.

`python -m tests.engines NAME` does the same from a shell (see __main__.py and README.md).
Missing Java or Maven, or jars Maven cannot resolve, raise `EngineUnavailable` (tests skip
on it, or fail under CI=true); an engine that is there but does not start raises
`EngineFailed` (always a test failure).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

MAVEN_DIR = Path(__file__).resolve().parent / "maven"
HEAP = "512m"
START_TIMEOUT = 180.0  # seconds; a cold JVM on a loaded 2-core machine


class EngineUnavailable(RuntimeError):
    """Java, Maven or the engine's jars are not to be had on this machine."""


class EngineFailed(RuntimeError):
    """The engine could be prepared but did not start or answer; the message has its log."""


@dataclass(frozen=True)
class EngineSpec:
    """One engine: its Maven module, the Java it needs, and how it is launched."""

    name: str
    module: str  # directory under maven/ holding its pom.xml
    java: int  # lowest Java feature release that runs it
    main_class: str
    sources: tuple[str, ...]  # directories under maven/ compiled onto its classpath
    kind: str  # "http" or "kafka"
    jvm_options: tuple[str, ...] = ()

    @property
    def pom(self) -> Path:
        return MAVEN_DIR / self.module / "pom.xml"

    @property
    def version(self) -> str:
        """The engine version the pom pins (its first `<x.version>` property)."""
        text = self.pom.read_text(encoding="utf-8")
        match = re.search(r"<(?:opensearch|elasticsearch|kafka)\.version>([^<]+)<", text)
        return match.group(1) if match else "?"


ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec(
            "opensearch",
            "opensearch",
            17,
            "zeekndm.engines.OpenSearchLauncher",
            ("opensearch/src",),
            "http",
        ),
        EngineSpec(
            "elasticsearch",
            "elasticsearch8",
            17,
            "zeekndm.engines.ElasticsearchLauncher",
            ("elasticsearch/src",),
            "http",
        ),
        EngineSpec(
            "elasticsearch9",
            "elasticsearch9",
            21,
            "zeekndm.engines.ElasticsearchLauncher",
            ("elasticsearch/src",),
            "http",
            # Lucene 10 and Elasticsearch's native access call restricted JDK methods
            ("--enable-native-access=ALL-UNNAMED",),
        ),
        EngineSpec(
            "kafka",
            "kafka",
            17,
            "zeekndm.engines.KafkaLauncher",
            ("kafka/src",),
            "kafka",
        ),
    )  # fmt: skip
}


# -- Java and Maven -----------------------------------------------------------------------
def _java_release(home: Path) -> int | None:
    """The feature release of the JDK at `home` (from its `release` file), or None."""
    try:
        text = (home / "release").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r'^JAVA_VERSION="(\d+)(?:\.(\d+))?', text, re.MULTILINE)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _java_candidates() -> Iterator[Path]:
    if os.environ.get("JAVA_HOME"):
        yield Path(os.environ["JAVA_HOME"])
    java = shutil.which("java")
    if java:
        yield Path(os.path.realpath(java)).parent.parent
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        yield from sorted(p for p in jvm.iterdir() if p.is_dir())


def find_jdk(release: int) -> Path:
    """A JDK (java and javac) of at least `release`: JAVA_HOME, PATH, then /usr/lib/jvm/*."""
    seen = []
    for home in _java_candidates():
        found = _java_release(home)
        seen.append(f"{home} ({found or 'no JDK'})")
        if found and found >= release and (home / "bin" / "javac").exists():
            return home
    raise EngineUnavailable(
        f"no JDK {release}+ with javac found (looked at JAVA_HOME, PATH, /usr/lib/jvm: "
        f"{', '.join(seen) or 'nothing'})"
    )


def _cache_root() -> Path:
    base = os.environ.get("ZEEKNDM_ENGINE_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "zeekndm" / "engines"


def _maven_command(pom: Path, goals: list[str]) -> list[str]:
    mvn = shutil.which("mvn")
    if not mvn:
        raise EngineUnavailable("Maven (mvn) is not on PATH")
    cmd = [mvn, "-B", "-q", "-f", str(pom), *goals]
    repo = os.environ.get("ZEEKNDM_MAVEN_REPO")  # e.g. an empty one, to time a cold fetch
    if repo:
        cmd.append(f"-Dmaven.repo.local={repo}")
    return cmd


@dataclass(frozen=True)
class Prepared:
    """What starting an engine needs: a JDK, the jars, zip plugins and compiled launchers."""

    spec: EngineSpec
    jdk: Path
    jars: tuple[Path, ...]
    plugin_zips: tuple[Path, ...]
    classes: Path

    @property
    def java(self) -> Path:
        return self.jdk / "bin" / "java"

    @property
    def classpath(self) -> str:
        return os.pathsep.join([str(self.classes), *map(str, self.jars)])


def _digest(spec: EngineSpec, jdk: Path) -> str:
    h = hashlib.sha256(str(jdk.resolve()).encode())
    files = [MAVEN_DIR / "pom.xml", spec.pom]
    for source in spec.sources:
        files += sorted((MAVEN_DIR / source).rglob("*.java"))
    for path in files:
        h.update(str(path.relative_to(MAVEN_DIR)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def prepare(name: str) -> Prepared:
    """Resolve and compile `name` (once; later calls read the cache). EngineUnavailable when
    Java, Maven or the jars are missing; EngineFailed when the launcher does not compile."""
    spec = engine_spec(name)
    jdk = find_jdk(spec.java)
    cache = _cache_root() / f"{spec.name}-{_digest(spec, jdk)}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one resolver at a time (pytest and a shell, say)
        prepared = _read_cache(spec, jdk, cache)
        if prepared is None:
            prepared = _build(spec, jdk, cache)
    return prepared


def prepare_many(names) -> dict[str, Prepared | EngineUnavailable]:
    """Prepare several engines; what is not cached yet is fetched first in one parallel
    Maven run, so the downloads overlap instead of running engine after engine. Each
    engine's result is its own: one that cannot be had here does not stop the others."""
    specs = [engine_spec(name) for name in names]
    missing = [spec for spec in specs if not _cached(spec)]
    if len(missing) > 1:
        modules = ",".join(spec.module for spec in missing)
        # a failure here (no Maven, a jar not served) is reported by the engine it
        # concerns, when its own prepare() runs below
        with suppress(EngineUnavailable):
            goals = ["-T", "4", "-pl", modules, "dependency:resolve"]
            cmd = _maven_command(MAVEN_DIR / "pom.xml", goals)
            subprocess.run(cmd, capture_output=True, text=True, check=False)
    results: dict[str, Prepared | EngineUnavailable] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:  # Maven and javac start-ups overlap
        futures = {spec.name: pool.submit(prepare, spec.name) for spec in specs}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except EngineUnavailable as exc:
                results[name] = exc
    return results


def prepare_all() -> list[Prepared]:
    """Prepare every engine (`python -m tests.engines all --prepare`, CI's first step)."""
    results = prepare_many(ENGINES)
    for name, result in results.items():
        if isinstance(result, EngineUnavailable):
            raise EngineUnavailable(f"{name}: {result}")
    return list(results.values())


def _cached(spec: EngineSpec) -> bool:
    try:
        jdk = find_jdk(spec.java)
    except EngineUnavailable:
        return True  # nothing to fetch for it; its prepare() says why
    return _read_cache(spec, jdk, _cache_root() / f"{spec.name}-{_digest(spec, jdk)}") is not None


def _tail(proc: subprocess.CompletedProcess, lines: int = 12) -> str:
    return "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-lines:])


def engine_spec(name: str) -> EngineSpec:
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}") from None


def _read_cache(spec: EngineSpec, jdk: Path, cache: Path) -> Prepared | None:
    try:
        entries = [Path(p) for p in json.loads((cache / "classpath.json").read_text())]
    except (OSError, ValueError):
        return None
    if not all(p.exists() for p in entries) or not (cache / "classes").is_dir():
        return None  # a jar was removed from ~/.m2 since: resolve again
    return _prepared(spec, jdk, entries, cache / "classes")


def _prepared(spec: EngineSpec, jdk: Path, entries: list[Path], classes: Path) -> Prepared:
    jars = tuple(p for p in entries if p.suffix == ".jar")
    zips = tuple(p for p in entries if p.suffix == ".zip")
    return Prepared(spec, jdk, jars, zips, classes)


def _build(spec: EngineSpec, jdk: Path, cache: Path) -> Prepared:
    output = cache / "classpath.txt"
    cmd = _maven_command(spec.pom, ["dependency:build-classpath", f"-Dmdep.outputFile={output}"])
    env = dict(os.environ, JAVA_HOME=str(jdk))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 or not output.exists():
        raise EngineUnavailable(f"Maven could not resolve the {spec.name} jars:\n{_tail(proc)}")
    entries = [Path(p) for p in output.read_text().strip().split(os.pathsep) if p]
    classes = cache / "classes.tmp"
    shutil.rmtree(classes, ignore_errors=True)
    classes.mkdir()
    sources = [str(p) for s in spec.sources for p in sorted((MAVEN_DIR / s).rglob("*.java"))]
    jars = [str(p) for p in entries if p.suffix == ".jar"]
    javac = [str(jdk / "bin" / "javac"), "--release", str(spec.java), "-nowarn",
             "-d", str(classes), "-cp", os.pathsep.join(jars), *sources]  # fmt: skip
    proc = subprocess.run(javac, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EngineFailed(f"the {spec.name} launcher does not compile:\n{proc.stderr[-3000:]}")
    shutil.rmtree(cache / "classes", ignore_errors=True)
    classes.rename(cache / "classes")
    (cache / "classpath.json").write_text(json.dumps([str(p) for p in entries]))
    return _prepared(spec, jdk, entries, cache / "classes")


# -- running ------------------------------------------------------------------------------
_LOG4J2 = """\
status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{ISO8601}][%-5p][%c{1.}] %m%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
"""


@dataclass
class Engine:
    """A running engine. `url` is http://127.0.0.1:PORT, or kafka://127.0.0.1:PORT."""

    name: str
    version: str
    url: str
    home: Path
    process: subprocess.Popen
    started_in: float  # seconds from launch to answering
    _owns_home: bool = field(default=False, repr=False)
    _log: object = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def bootstrap(self) -> str:
        """Kafka's bootstrap.servers value."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "engine.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait (then SIGKILL); the temporary home is removed. Returns the exit code."""
        proc = self.process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdin:
            proc.stdin.close()
        if self._log:
            self._log.close()
        if self._owns_home:
            shutil.rmtree(self.home, ignore_errors=True)
        return proc.returncode

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    name: str, port: int = 0, home: Path | None = None, timeout: float = START_TIMEOUT
) -> Engine:
    """Prepare and start `name`; return once it answers. `port` 0 picks a free one; without
    `home` a temporary directory is used and removed by `stop()`."""
    prepared = prepare(name)
    spec = prepared.spec
    owns_home = home is None
    home = Path(tempfile.mkdtemp(prefix=f"zeekndm-{name}-")) if home is None else Path(home)
    home = home.resolve()
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    (home / "config" / "log4j2.properties").write_text(_LOG4J2)
    for stale in ("http.port", "http.port.tmp"):
        (home / stale).unlink(missing_ok=True)
    if spec.kind == "kafka":
        port = port or free_port()
        args = [str(home), _kafka_config(home, port)]
    else:
        _install_plugins(prepared.plugin_zips, home / "plugins")
        args = [str(home), str(port)]
    cmd = [
        # Serial GC and the C1 compiler only: half the CPU time to start (measured: 5 s
        # instead of 10 s for Elasticsearch), which matters on a 2-core machine shared with
        # the tests; a test engine's throughput needs no C2.
        str(prepared.java), f"-Xms{HEAP}", f"-Xmx{HEAP}", "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        f"-Djava.io.tmpdir={home / 'tmp'}",
        f"-Dlog4j2.configurationFile={home / 'config' / 'log4j2.properties'}",
        *spec.jvm_options, "-cp", prepared.classpath, spec.main_class, *args,
    ]  # fmt: skip
    log = open(home / "engine.log", "ab")
    began = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=home, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it
    )  # fmt: skip
    engine = Engine(name, spec.version, "", home, proc, 0.0, owns_home, log)
    try:
        if spec.kind == "kafka":
            engine.url = f"kafka://127.0.0.1:{port}"
            _wait(engine, lambda: _kafka_answers(port), began, timeout)
        else:
            engine.url = _wait(engine, lambda: _http_port(home), began, timeout)
            _wait(engine, lambda: _http_healthy(engine.url), began, timeout)
    except BaseException:
        engine.stop(timeout=10)
        raise
    engine.started_in = time.monotonic() - began
    return engine


def _wait(engine: Engine, probe, began: float, timeout: float):
    while True:
        result = probe()
        if result:
            return result
        if engine.process.poll() is not None:
            raise EngineFailed(
                f"{engine.name} exited with {engine.process.returncode} before it answered; "
                f"log {engine.log_path}:\n{engine.log_tail()}"
            )
        if time.monotonic() > began + timeout:
            raise EngineFailed(
                f"{engine.name} did not answer within {timeout:.0f} s; "
                f"log {engine.log_path}:\n{engine.log_tail()}"
            )
        time.sleep(0.2)


def _install_plugins(zips: tuple[Path, ...], plugins: Path) -> None:
    """Unpack each plugin zip into plugins/<name>/, as `opensearch-plugin install` does."""
    plugins.mkdir(exist_ok=True)
    for path in zips:
        with zipfile.ZipFile(path) as archive:
            descriptor = archive.read("plugin-descriptor.properties").decode()
            name = re.search(r"^name=(.+)$", descriptor, re.MULTILINE).group(1).strip()
            target = plugins / name
            if not target.exists():
                archive.extractall(target)


def _http_port(home: Path) -> str | None:
    try:
        return f"http://127.0.0.1:{int((home / 'http.port').read_text())}"
    except (OSError, ValueError):
        return None


def _http_healthy(url: str) -> bool:
    """True once the cluster is at least yellow (its one node elected, state recovered)."""
    request = url + "/_cluster/health?wait_for_status=yellow&timeout=1s"
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _kafka_config(home: Path, port: int) -> str:
    """server.properties for one KRaft broker+controller on 127.0.0.1; returns a cluster id."""
    controller = free_port()
    (home / "server.properties").write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={home / 'data'}",
                "num.partitions=1",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                # 50 by default: creating them at the first transaction takes ~20 s here
                "transaction.state.log.num.partitions=4",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "",
            ]
        )
    )
    # Kafka's own `random-uuid` form (URL-safe base64 of 16 bytes); one that starts with "-"
    # (about 1 in 64) is taken by the storage tool's argument parser for an option, so draw again.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _kafka_answers(port: int) -> bool:
    """True when a Metadata (v4) request names at least one broker and a controller.

    Why not just a TCP connect: the socket accepts before the broker has registered with
    the controller; a broker only serves Metadata once it is unfenced, i.e. ready for
    produce and topic creation."""
    client = b"zeekndm-probe"
    body = struct.pack(">hhih", 3, 4, 1, len(client)) + client + struct.pack(">i?", -1, False)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _recv(sock, 4))[0]
            data = _recv(sock, size)
    except (OSError, struct.error):
        return False
    # correlation id, throttle_time_ms, brokers [node_id, host, port, rack], cluster_id, controller
    offset = 8
    brokers = struct.unpack_from(">i", data, offset)[0]
    offset += 4
    for _ in range(brokers):
        offset += 4
        (host_len,) = struct.unpack_from(">h", data, offset)
        offset += 2 + host_len + 4
        (rack_len,) = struct.unpack_from(">h", data, offset)
        offset += 2 + max(rack_len, 0)
    (cluster_len,) = struct.unpack_from(">h", data, offset)
    offset += 2 + max(cluster_len, 0)
    (controller,) = struct.unpack_from(">i", data, offset)
    return brokers > 0 and controller >= 0


def _recv(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise OSError("connection closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
