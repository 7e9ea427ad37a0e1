"""Fixtures that run the real relay (`relay serve`), `relay agent`, and device web servers.

Every process is bounded in time and always stopped (SIGTERM, wait, SIGKILL, wait).
The relay binary comes from $RELAY_BIN (default: .build/debug/relay in the repository).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

import relayproto  # noqa: E402
from devservers import RecordingServer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TEST_TIMEOUT = float(os.environ.get("RELAY_TEST_TIMEOUT", "120"))

# ---------------------------------------------------------------- loop threads
#
# CI runs the whole suite twice, with RELAY_THREADS=1 and RELAY_THREADS=2: every relay a test
# starts inherits the variable (tests that control the environment keep it, see
# `suite_env`). Unset, each relay runs its default: the online CPUs, at most 16.

MAX_DEFAULT_THREADS = 16


def _suite_threads() -> Optional[int]:
    """RELAY_THREADS as the suite was started with it (None: unset); a bad value stops the run."""
    text = os.environ.get("RELAY_THREADS")
    if text is None:
        return None
    if not text.strip().isdigit() or not 1 <= int(text) <= 64:
        raise pytest.UsageError(f"RELAY_THREADS={text!r}: give the relay's loop thread count, 1 to 64, or leave it unset")
    return int(text)


SUITE_THREADS = _suite_threads()


def default_threads() -> int:
    """The relay's own default: sysconf(_SC_NPROCESSORS_ONLN), from 1 to 16."""
    try:
        online = os.sysconf("SC_NPROCESSORS_ONLN")
    except (ValueError, OSError):
        online = 1
    return min(MAX_DEFAULT_THREADS, max(1, online))


def suite_threads() -> int:
    """How many loop threads a relay of this pass runs unless a test says otherwise."""
    return SUITE_THREADS if SUITE_THREADS is not None else default_threads()


def suite_env() -> dict:
    """The RELAY_* variables of the pass itself (RELAY_THREADS), for tests that start a relay
    with an environment of their own: the pass's thread count still applies to it."""
    return {"RELAY_THREADS": str(SUITE_THREADS)} if SUITE_THREADS is not None else {}


@pytest.fixture(scope="session", autouse=True)
def _record_relay_threads(record_testsuite_property):
    """The pass's thread count in the JUnit XML too (--junitxml), beside the header's line."""
    record_testsuite_property("relay_threads", str(SUITE_THREADS) if SUITE_THREADS is not None else "unset")
    record_testsuite_property("relay_threads_effective", str(suite_threads()))


def pytest_report_header(config):
    if SUITE_THREADS is None:
        return (f"relay loop threads: RELAY_THREADS unset, every relay runs its default "
                f"(the online CPUs, at most {MAX_DEFAULT_THREADS}: {default_threads()} here)")
    return f"relay loop threads: RELAY_THREADS={SUITE_THREADS} (every relay the suite starts inherits it)"


# ---------------------------------------------------------------- per-test watchdog


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (SIGALRM watchdog)")
    config.addinivalue_line("markers", "needs_relay: test runs the relay binary")


class TestTimeout(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    m = item.get_closest_marker("timeout")
    limit = float(m.args[0]) if m else DEFAULT_TEST_TIMEOUT
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")
    if use_alarm:
        def on_alarm(signum, frame):
            raise TestTimeout(f"test exceeded its {limit:.0f}s limit")

        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------- ports and processes

_used_ports: set = set()
_port_lock = threading.Lock()


def relay_threads() -> int:
    """The loop threads of the relays this run starts: RELAY_THREADS, else the relay's default
    (the online CPUs, at most 16)."""
    env = os.environ.get("RELAY_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else min(os.cpu_count() or 1, 16)


# A relay with N loop threads listens for device callbacks on N consecutive TCP ports from the
# one given (--tcp P: P .. P+N-1). Every TCP port handed out here comes with the N - 1 ports
# after it free and reserved too, so that any of them may serve as --tcp.
TCP_PORT_BLOCK = relay_threads()


def _bindable(fam: int, kind: int, host: str, port: int) -> bool:
    try:
        with socket.socket(fam, kind) as s:
            s.bind((host, port))
        return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1", kind: str = "tcp") -> int:
    """A port that is free for `kind` ("tcp", "udp" or "both") on `host`, not handed out before
    (a TCP one with the TCP_PORT_BLOCK - 1 ports after it free and reserved as well)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1000):
        with socket.socket(fam, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if kind == "both" and not _bindable(fam, socket.SOCK_DGRAM, host, port):
            continue
        block = [port] if kind == "udp" else list(range(port, port + TCP_PORT_BLOCK))
        if block[-1] > 65535 or not all(_bindable(fam, socket.SOCK_STREAM, host, p) for p in block[1:]):
            continue
        with _port_lock:
            if any(p in _used_ports for p in block):
                continue
            _used_ports.update(block)
        return port
    raise RuntimeError("no free port")


def free_port_block(host: str = "127.0.0.1", count: int = 1) -> int:
    """The first of `count` consecutive free TCP ports on `host`, none handed out before: a
    relay with N loop threads listens for device callbacks on --tcp's port plus 0..N-1."""
    if count <= 1:
        return free_port(host, "tcp")
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            base = s.getsockname()[1]
        ports = range(base, base + count)
        if ports[-1] > 65535:
            continue
        held = []
        try:
            for p in ports[1:]:
                t = socket.socket(fam, socket.SOCK_STREAM)
                held.append(t)
                t.bind((host, p))
        except OSError:
            continue
        finally:
            for t in held:
                t.close()
        with _port_lock:
            if any(p in _used_ports for p in ports):
                continue
            _used_ports.update(ports)
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


def threads_of(args: list, env: Optional[dict]) -> int:
    """The loop threads a relay started with `args` and `env` (None: this environment) runs:
    its last --threads, else RELAY_THREADS, else the default."""
    args = [str(a) for a in args]
    given = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--threads"]
    given += [a.split("=", 1)[1] for a in args if a.startswith("--threads=")]
    text = given[-1] if given else (os.environ if env is None else env).get("RELAY_THREADS")
    try:
        return max(1, min(64, int(text))) if text is not None else default_threads()
    except ValueError:
        return 1


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wait_tcp(host: str, port: int, timeout: float = 10.0, proc: Optional[subprocess.Popen] = None) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Proc:
    """A child process with stdout/stderr in files; `stop()` is bounded and idempotent."""

    def __init__(self, args: list, workdir: Path, name: str, env: Optional[dict] = None, preexec_fn=None):
        self.args = [str(a) for a in args]
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.out_path = workdir / f"{name}.stdout"
        self.err_path = workdir / f"{name}.stderr"
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.p = subprocess.Popen(self.args, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
                                  env=env, start_new_session=True, preexec_fn=preexec_fn)
        self.pid = self.p.pid

    def stderr(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def stdout(self) -> str:
        try:
            return self.out_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.p.poll() is None

    def send_signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> Optional[int]:
        if self.alive():
            try:
                self.p.send_signal(sig)
            except ProcessLookupError:
                pass
            if self.wait(timeout) is None:
                try:
                    self.p.kill()
                except ProcessLookupError:
                    pass
                self.wait(5)
        for f in (self._out, self._err):
            with contextlib.suppress(Exception):
                f.close()
        return self.p.returncode

    def kill(self):
        if self.alive():
            self.p.kill()
            self.wait(5)

    def describe(self, tail: int = 4000) -> str:
        err = self.stderr()
        return f"{self.name} {' '.join(self.args)}\n--- stderr (tail) ---\n{err[-tail:]}"


# ---------------------------------------------------------------- metrics

_METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics(dict):
    """Prometheus text parsed into {(name, ((label, value), ...)): float}."""

    def get_value(self, name: str, **labels) -> float:
        """The series with exactly these labels, else the sum of the series that carry them
        (so that relay_datagrams_dropped_total(reason="replay") sums over every kind)."""
        key = (name, tuple(sorted(labels.items())))
        if key in self:
            return self[key]
        want = set(labels.items())
        return sum(v for (n, ls), v in self.items() if n == name and want <= set(ls))

    __call__ = get_value

    def names(self) -> set:
        return {k[0] for k in self}


def parse_metrics(text: str) -> Metrics:
    m = Metrics()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        mm = _METRIC_RE.match(line)
        if not mm:
            continue
        name, labels_s, value = mm.group(1), mm.group(3) or "", mm.group(4)
        labels = tuple(sorted(_LABEL_RE.findall(labels_s)))
        try:
            m[(name, labels)] = float(value)
        except ValueError:
            continue
    return m


# ---------------------------------------------------------------- binary and CLI


def relay_bin() -> Path:
    env = os.environ.get("RELAY_BIN")
    p = Path(env) if env else REPO / ".build" / "debug" / "relay"
    if not p.is_absolute():
        p = (REPO / p) if (REPO / p).exists() else p.resolve()
    if not p.exists():
        if env:
            pytest.fail(f"RELAY_BIN={env} does not exist")
        pytest.skip(f"relay binary not built ({p}); set RELAY_BIN")
    return p


# The device agent comes in two builds of the same agent.c: `relay agent` in the Swift binary
# and the standalone C program `relay-agent` (make agent). Tests that matter for the agent run
# against both with @both_agents (the agent_impl fixture); the rest use `relay agent`.
AGENT_IMPLS = ["swift", "c"]


def relay_agent_bin() -> Path:
    env = os.environ.get("RELAY_AGENT_BIN")
    p = Path(env) if env else REPO / ".build-agent" / "relay-agent"
    if not p.is_absolute():
        p = REPO / p
    if not p.exists():
        if env:
            pytest.fail(f"RELAY_AGENT_BIN={env} does not exist")
        pytest.skip(f"relay-agent not built ({p}): make agent, or set RELAY_AGENT_BIN")
    return p


def agent_command(impl: str = "swift") -> list:
    """The argv prefix that runs the agent: `relay agent` or `relay-agent`, same flags after it."""
    return [relay_bin(), "agent"] if impl == "swift" else [relay_agent_bin()]


@pytest.fixture
def agent_impl(request) -> str:
    """Which agent build the test runs: "swift" unless parametrized by @both_agents."""
    return getattr(request, "param", "swift")


both_agents = pytest.mark.parametrize("agent_impl", AGENT_IMPLS, indirect=True)


def run_cli(args: list, timeout: float = 30.0) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([str(relay_bin())] + [str(a) for a in args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"relay {' '.join(map(str, args))} did not finish within {timeout}s: {e}")


HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Relay:
    """One `relay serve` process with its own --data dir and ports."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1", udp_count: int = 1, http_count: int = 1,
                 extra: Optional[list] = None, data_dir: Optional[Path] = None, start: bool = True):
        self.workdir = workdir
        self.host = host
        self.data = data_dir or (workdir / "data")
        self.data.mkdir(parents=True, exist_ok=True)
        self.http_ports = [free_port(host, "tcp") for _ in range(http_count)]
        self.udp_ports = [free_port(host, "udp") for _ in range(udp_count)]
        self.extra = [str(a) for a in (extra or [])]
        # Loop i's callback listener is on tcp_port + i: keep the block free for the most
        # threads this relay may run (its own --threads, or the pass's).
        self.tcp_port = free_port_block(host, max(threads_of(self.extra, None), suite_threads()))
        self.metrics_port = free_port(host, "tcp")
        self.proc: Optional[Proc] = None
        self.env: Optional[dict] = None  # the process environment; None: the test's own
        self.devices: dict = {}
        self.n_started = 0
        if start:
            self.start()

    # addresses
    @property
    def http_port(self) -> int:
        return self.http_ports[0]

    @property
    def udp_port(self) -> int:
        return self.udp_ports[0]

    @property
    def udp_addr(self) -> tuple:
        return (self.host, self.udp_port)

    @property
    def base(self) -> str:
        return f"http://{hostport(self.host, self.http_port)}"

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def threads(self) -> int:
        """The loop threads this relay runs (its --threads, else RELAY_THREADS, else the default)."""
        return threads_of(self.extra, self.env)

    @property
    def callback_ports(self) -> range:
        """Where devices may be told to call back: loop i listens on tcp_port + i (PERIOD_INFO
        names loop 0's; a CONNECT_REQUEST names the port of the loop serving the terminal)."""
        return range(self.tcp_port, self.tcp_port + self.threads)

    def dev_url(self, device_id: str, path: str = "/") -> str:
        return self.base + f"/d/{device_id}" + path

    def args(self) -> list:
        a = [relay_bin(), "serve", "--data", self.data]
        for p in self.http_ports:
            a += ["--http", hostport(self.host, p)]
        for p in self.udp_ports:
            a += ["--udp", hostport(self.host, p)]
        a += ["--tcp", hostport(self.host, self.tcp_port), "--metrics", hostport(self.host, self.metrics_port)]
        return a + self.extra

    def start(self, timeout: float = 30.0):
        self.n_started += 1
        self.proc = Proc(self.args(), self.workdir, f"relay{self.n_started}", env=self.env)
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            if not self.proc.alive():
                pytest.fail(f"relay exited with {self.proc.p.returncode} before becoming ready\n{self.proc.describe()}")
            try:
                r = requests.get(self.url("/healthz"), timeout=1)
                last = r.status_code
                if r.status_code == 200:
                    return self
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.1)
        self.proc.stop()
        pytest.fail(f"relay not ready within {timeout}s (last /healthz: {last})\n{self.proc.describe()}")

    def stop(self, sig=signal.SIGTERM) -> Optional[int]:
        return self.proc.stop(sig) if self.proc else None

    def stderr(self) -> str:
        return self.proc.stderr() if self.proc else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def healthy(self) -> bool:
        try:
            return requests.get(self.url("/healthz"), timeout=3).status_code == 200
        except requests.RequestException:
            return False

    # CLI bound to this relay's store
    def cli(self, *args, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return run_cli(list(args) + ["--data", self.data], timeout)

    def add_device(self, device_id: str, wait: bool = True) -> str:
        before = self.metrics()("relay_devices") if wait and self.alive() else None
        r = self.cli("device", "add", device_id)
        assert r.returncode == 0, f"device add {device_id} failed ({r.returncode}): {r.stderr}"
        lines = [l.strip() for l in r.stdout.splitlines() if l.strip()]
        secrets = [l for l in lines if HEX64.match(l)]
        assert len(secrets) == 1, f"device add printed no 64-hex secret line: {r.stdout!r}"
        self.devices[device_id] = secrets[0]
        if wait and self.alive():
            # the running relay picks devices up within ~1 s
            self.wait_metric("relay_devices", lambda v: v >= before + 1, timeout=5, fail=False)
            time.sleep(0.1)
        return secrets[0]

    def remove_device(self, device_id: str) -> subprocess.CompletedProcess:
        return self.cli("device", "remove", device_id)

    def token(self, device_id: str, ttl: Optional[str] = None) -> str:
        args = ["token", device_id] + (["--ttl", ttl] if ttl else [])
        r = self.cli(*args)
        assert r.returncode == 0, f"token {device_id} failed ({r.returncode}): {r.stderr}"
        lines = [l.strip() for l in r.stdout.splitlines() if l.strip()]
        assert len(lines) == 1, f"token printed {len(lines)} lines: {r.stdout!r}"
        return lines[0]

    def auth(self, device_id: str) -> dict:
        return {"Authorization": "Bearer " + self.token(device_id)}

    # metrics
    def metrics_text(self) -> str:
        r = requests.get(f"http://{hostport(self.host, self.metrics_port)}/metrics", timeout=5)
        assert r.status_code == 200, f"/metrics answered {r.status_code}"
        return r.text

    def metrics(self) -> Metrics:
        return parse_metrics(self.metrics_text())

    def wait_metric(self, name: str, pred, timeout: float = 3.0, fail: bool = True, **labels) -> float:
        end = time.monotonic() + timeout
        v = None
        while True:
            v = self.metrics()(name, **labels)
            if pred(v):
                return v
            if time.monotonic() > end:
                if fail:
                    pytest.fail(f"metric {name}{labels} = {v}: condition not met within {timeout}s")
                return v
            time.sleep(0.05)

    def wait_delta(self, before: Metrics, name: str, delta: float = 1, timeout: float = 3.0, **labels) -> float:
        base = before(name, **labels)
        v = self.wait_metric(name, lambda v: v - base >= delta, timeout=timeout, fail=False, **labels)
        assert v - base >= delta, f"{name}{labels}: expected +{delta}, got {v - base} (before {base}, now {v})"
        return v - base

    def fake_device(self, device_id: str, nsockets: int = 1, register: bool = True, udp_index: int = 0,
                    secret: Optional[str] = None) -> relayproto.FakeDevice:
        secret = secret or self.devices.get(device_id) or self.add_device(device_id)
        d = relayproto.FakeDevice(device_id, secret, (self.host, self.udp_ports[udp_index]), nsockets=nsockets)
        if register:
            d.register()
        return d


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="relay-it-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cleanup():
    """A list of callables run (in reverse) at teardown, each guarded."""
    fns: list = []
    yield fns
    for fn in reversed(fns):
        with contextlib.suppress(Exception):
            fn()


@pytest.fixture
def relay_factory(workdir, cleanup):
    n = [0]

    def make(*extra, host: str = "127.0.0.1", udp_count: int = 1, http_count: int = 1, start: bool = True,
             data_dir: Optional[Path] = None) -> Relay:
        n[0] += 1
        r = Relay(workdir / f"r{n[0]}", host=host, udp_count=udp_count, http_count=http_count, extra=list(extra),
                  data_dir=data_dir, start=False)
        cleanup.append(r.stop)
        if start:
            r.start()
        return r

    return make


@pytest.fixture
def relay(relay_factory) -> Relay:
    return relay_factory("--wake-timeout", "5s")


@pytest.fixture
def fake_devices(cleanup):
    """Register FakeDevice objects here to have them closed at teardown."""
    devs: list = []
    cleanup.append(lambda: [d.close() for d in devs])
    return devs


@pytest.fixture
def static_server(workdir, cleanup):
    """`python3 -m http.server` serving a directory the test fills. Returns a factory."""
    n = [0]

    def make(host: str = "127.0.0.1") -> tuple:
        n[0] += 1
        root = workdir / f"www{n[0]}"
        root.mkdir(parents=True, exist_ok=True)
        port = free_port(host, "tcp")
        p = Proc([sys.executable, "-m", "http.server", "--bind", host, str(port), "--directory", root],
                 workdir, f"httpserver{n[0]}")
        cleanup.append(p.stop)
        if not wait_tcp(host, port, 15, p.p):
            pytest.fail(f"http.server did not come up\n{p.describe()}")
        return root, port, p

    return make


@pytest.fixture
def recording_server(cleanup):
    """In-process HTTP/1.1 device web server recording what it receives. Returns a factory."""

    def make(host: str = "127.0.0.1", **kw) -> RecordingServer:
        s = RecordingServer(host, **kw)
        s.start()
        cleanup.append(s.stop)
        return s

    return make


@pytest.fixture
def agent_factory(workdir, cleanup, agent_impl):
    """Starts `relay agent` (or `relay-agent`, see agent_impl) for a device against a relay;
    waits until it has notified."""
    n = [0]

    def make(relay: Relay, device_id: str, forward_port: int, forward_host: str = "127.0.0.1",
             udp_index: int = 0, wait: bool = True) -> Proc:
        n[0] += 1
        secret = relay.devices.get(device_id) or relay.add_device(device_id)
        before = relay.metrics() if wait else None
        p = Proc(agent_command(agent_impl) + ["--relay", hostport(relay.host, relay.udp_ports[udp_index]),
                  "--id", device_id, "--key", secret, "--forward", hostport(forward_host, forward_port)],
                 workdir, f"agent{n[0]}-{device_id}")
        cleanup.append(p.stop)
        if wait:
            end = time.monotonic() + 20
            while time.monotonic() < end:
                if not p.alive():
                    pytest.fail(f"agent exited with {p.p.returncode}\n{p.describe()}\n{relay.proc.describe()}")
                if relay.metrics()("relay_notify_total", kind="a") > before("relay_notify_total", kind="a"):
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"agent for {device_id} sent no accepted NOTIFY_A within 20s\n{p.describe()}\n"
                            f"{relay.proc.describe()}")
        return p

    return make


# ---------------------------------------------------------------- PostgreSQL device store
#
# test_store_postgres.py runs the relay and its CLI against a real PostgreSQL 15 server that
# this session starts once (pgserver.py: initdb into a temp directory, 127.0.0.1 only).


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server (pgserver.PgServer); fails if PostgreSQL is missing."""
    import pgserver

    why = pgserver.missing()
    if why:
        pytest.fail(why, pytrace=False)
    pg = pgserver.PgServer(port_picker=lambda: free_port("127.0.0.1", "tcp"))
    try:
        pg.start()
    except BaseException:
        pg.close()
        raise
    yield pg
    pg.close()


@pytest.fixture
def pg_url(postgres):
    """The URL of a fresh empty database on the session's server (dropped afterwards)."""
    if not postgres.running():  # an outage test that failed half-way
        postgres.start()
    name = postgres.create_database()
    yield postgres.url_for(name)
    if postgres.running():
        postgres.drop_database(name)
