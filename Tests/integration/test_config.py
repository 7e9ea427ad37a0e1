"""The configuration layers: `relay serve --config FILE` (YAML, keys = serve's long flag names),
RELAY_<KEY> variables over the file, flags over both; `relay check-config`; SIGHUP reload;
`relay agent --config FILE` with RELAY_AGENT_<KEY> variables and a mode-600 key file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest
import requests

from conftest import (REPO, SUITE_THREADS, Proc, Relay, agent_command, both_agents, free_port, hostport, relay_bin,
                      suite_env, suite_threads)
from helpers import wait_until

T = (5, 30)
PACKAGING_YAML = REPO / "packaging" / "relay.yaml"
SERVE_KEYS = ["data", "store", "http", "https", "udp", "tcp", "floating", "node", "mesh", "mesh-peer", "mesh-key-file", "callback-host", "metrics", "admin", "tls-cert", "tls-key", "device-ca", "domain", "period", "keepalive", "threads", "capacity",
              "max-sessions", "wake-timeout", "idle-link", "max-header-bytes", "header-timeout",
              "max-conns-per-source", "conn-rate-per-source", "max-callbacks-per-source", "max-sessions-per-device",
              "wakes-per-device-minute", "idle-timeout", "drain-timeout", "log-level"]
READY_RE = re.compile(r"relay\.ready\s+http=(\S+)\s+udp=(\S+)\s+tcp=(\S+)\s+metrics=(\S+)\s+data=(\S+)")
# `key: value  # origin`, as check-config prints every setting
EFFECTIVE_RE = re.compile(r"^([a-z][a-z-]*): (.*?)  # (.+)$")


# ---------------------------------------------------------------- helpers


def env_with(**variables) -> dict:
    """This environment without any RELAY_* variable (the file alone) but the pass's own
    (RELAY_THREADS, see conftest), plus `variables`; a variable given as None is left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(suite_env())
    env.update({k: str(v) for k, v in variables.items()})
    return {k: v for k, v in env.items() if v != "None"}


# What check-config says of `threads` when nothing but the pass sets it.
PASS_THREADS = (str(suite_threads()), "RELAY_THREADS" if SUITE_THREADS is not None else "default")


def run_relay(args: list, env: Optional[dict] = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """`relay ARGS` to completion with a controlled environment (RELAY_* only as given)."""
    try:
        return subprocess.run([str(relay_bin())] + [str(a) for a in args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, env=env if env is not None else env_with())
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"relay {' '.join(map(str, args))} did not finish within {timeout}s: {e}")


def check_config(*args, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return run_relay(["check-config"] + list(args), env=env)


def effective(stdout: str) -> dict:
    """check-config's output as {key: (value, origin)}; every line must have that shape."""
    out = {}
    for line in stdout.splitlines():
        m = EFFECTIVE_RE.match(line)
        assert m, f"check-config line not `key: value  # origin`: {line!r}\n{stdout}"
        assert m.group(1) not in out, f"{m.group(1)} printed twice\n{stdout}"
        out[m.group(1)] = (m.group(2), m.group(3))
    return out


def yaml_value(v) -> str:
    """A Python value as YAML (JSON strings and flow lists are YAML); `Raw` goes in verbatim."""
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(json.dumps(str(x)) for x in v) + "]"
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))


class Raw(str):
    """A value written to the YAML file as it is (for malformed values)."""


def write_yaml(path: Path, settings: dict) -> Path:
    path.write_text("# written by test_config.py\n" + "".join(f"{k}: {yaml_value(v)}\n" for k, v in settings.items()))
    return path


def count(text: str, event: str) -> int:
    return len(re.findall(rf"\b{re.escape(event)}\s*$", text, re.M))


def log_lines(text: str, event: str) -> list:
    """The log lines ending with `event` (the logger puts the metadata before the message)."""
    return [l for l in text.splitlines() if re.search(rf"\b{re.escape(event)}\s*$", l)]


def metadata(line: str, key: str) -> str:
    m = re.search(rf"(?:^|\s){re.escape(key)}=(\S*)", line)
    assert m, f"no {key}= in {line!r}"
    return m.group(1)


class ConfigRelay(Relay):
    """`relay serve --config FILE [extra]` whose file sets the listeners (free loopback ports),
    the data directory and the metrics listener; the environment is this one without RELAY_*
    plus `env`."""

    def __init__(self, workdir: Path, settings: Optional[dict] = None, extra: Optional[list] = None,
                 env: Optional[dict] = None):
        super().__init__(workdir, extra=extra, start=False)
        self.env = env_with(**(env or {}))
        self.config_path = workdir / "relay.yaml"
        self.settings: dict = {}
        self.write_config(**(settings or {}))

    def listener_settings(self) -> dict:
        return {
            "data": str(self.data),
            "http": [hostport(self.host, p) for p in self.http_ports],
            "udp": [hostport(self.host, p) for p in self.udp_ports],
            "tcp": [hostport(self.host, self.tcp_port)],
            "metrics": [hostport(self.host, self.metrics_port)],
        }

    def write_config(self, **settings):
        """Rewrites the file: the listeners plus `settings` (keys with `_` for `-`)."""
        self.settings = {**self.listener_settings(), **{k.replace("_", "-"): v for k, v in settings.items()}}
        write_yaml(self.config_path, self.settings)

    def args(self) -> list:
        return [relay_bin(), "serve", "--config", self.config_path] + self.extra

    def hup(self):
        assert self.alive(), self.proc.describe()
        self.proc.send_signal(signal.SIGHUP)

    def wait_log(self, event: str, n: int, timeout: float = 10.0) -> list:
        """Waits until `event` has been logged `n` times; returns those lines."""
        ok = wait_until(lambda: count(self.stderr(), event) >= n or not self.alive(), timeout, 0.05)
        assert self.alive(), f"relay died\n{self.proc.describe()}"
        assert ok and count(self.stderr(), event) >= n, f"{event} not logged {n} times within {timeout}s\n" \
                                                        f"{self.proc.describe()}"
        return log_lines(self.stderr(), event)

    def period(self) -> float:
        return self.metrics()("relay_max_access_period_seconds")


@pytest.fixture
def config_relay(workdir, cleanup):
    """Factory of ConfigRelay (not started: call .start()); each is stopped at teardown."""
    n = [0]

    def make(settings: Optional[dict] = None, extra: Optional[list] = None, env: Optional[dict] = None,
             start: bool = True) -> ConfigRelay:
        n[0] += 1
        r = ConfigRelay(workdir / f"c{n[0]}", settings=settings, extra=extra, env=env)
        cleanup.append(r.stop)
        if start:
            r.start()
        return r

    return make


# ---------------------------------------------------------------- 1. serve from a file alone


@pytest.mark.timeout(60)
def test_serve_with_only_config_listens_where_the_file_says(config_relay, fake_devices):
    relay = config_relay({"period": 120}, start=False)
    assert [str(a) for a in relay.args()[1:]] == ["serve", "--config", str(relay.config_path)], "only --config"
    relay.start()  # /healthz answered on the file's http address
    m = wait_until(lambda: READY_RE.search(relay.stderr()), 5)
    assert m, relay.proc.describe()
    s = relay.settings
    assert m.group(1).split(",") == s["http"], m.group(0)
    assert m.group(2).split(",") == s["udp"], m.group(0)
    assert m.group(3).split(",") == s["tcp"], m.group(0)
    assert m.group(4).split(",") == s["metrics"], m.group(0)
    assert m.group(5) == s["data"], m.group(0)
    assert relay.stderr().count("relay.ready") == 1

    assert requests.get(relay.url("/readyz"), timeout=T).text == "ready\n"
    # metrics on the file's metrics address, with the file's period
    assert relay.period() == 120
    # the store is the file's data directory: a device added there is picked up
    relay.add_device("cfgfile1")
    assert relay.metrics()("relay_devices") == 1
    # devices register on the file's UDP address and are told the file's TCP callback port
    dev = relay.fake_device("cfgfile1")
    fake_devices.append(dev)
    assert (dev.info.period, dev.info.callback_port) == (120, relay.tcp_port), dev.info
    assert relay.stop() == 0, relay.stderr()


# ---------------------------------------------------------------- 2. precedence


def test_check_config_precedence_file_env_flag(workdir):
    cfg = write_yaml(workdir / "p.yaml", {"data": str(workdir / "never-created"), "period": 120})
    r = check_config("--config", cfg)
    assert r.returncode == 0, r.stderr
    eff = effective(r.stdout)
    assert eff["period"] == ("120s", str(cfg))
    assert eff["keepalive"] == ("25s", "default")
    assert eff["max-sessions"] == ("65536", "default")

    r = check_config("--config", cfg, env=env_with(RELAY_PERIOD=90))
    assert r.returncode == 0, r.stderr
    assert effective(r.stdout)["period"] == ("90s", "RELAY_PERIOD")

    r = check_config("--config", cfg, "--period", "60", env=env_with(RELAY_PERIOD=90))
    assert r.returncode == 0, r.stderr
    eff = effective(r.stdout)
    assert eff["period"] == ("60s", "--period")
    assert eff["data"] == (json.dumps(str(workdir / "never-created")), str(cfg))
    # check-config opens nothing
    assert not (workdir / "never-created").exists()


@pytest.mark.timeout(90)
def test_running_relay_period_follows_precedence(config_relay):
    relay = config_relay({"period": 120})
    assert relay.period() == 120
    relay.stop()

    relay = config_relay({"period": 120}, env={"RELAY_PERIOD": 90})
    assert relay.period() == 90
    relay.stop()

    relay = config_relay({"period": 120}, env={"RELAY_PERIOD": 90}, extra=["--period", "60"])
    assert relay.period() == 60


@pytest.mark.timeout(60)
def test_env_list_variable_overrides_file_listeners(config_relay, workdir):
    """RELAY_HTTP (comma-separated) replaces the file's http list."""
    ports = [free_port(), free_port()]
    value = ",".join(f"127.0.0.1:{p}" for p in ports)
    relay = config_relay(env={"RELAY_HTTP": value}, start=False)
    relay.http_ports = ports  # where the relay should listen instead of the file's address
    relay.start()
    for p in ports:
        assert requests.get(f"http://127.0.0.1:{p}/healthz", timeout=T).status_code == 200
    line = READY_RE.search(relay.stderr())
    assert line and line.group(1) == value, relay.stderr()
    r = check_config("--config", relay.config_path, env=env_with(RELAY_HTTP=value))
    assert effective(r.stdout)["http"] == (json.dumps([f"127.0.0.1:{p}" for p in ports]), "RELAY_HTTP")


# ---------------------------------------------------------------- 3. check-config


def test_check_config_good_file_prints_every_key(workdir):
    r = check_config("--config", PACKAGING_YAML)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    eff = effective(r.stdout)
    assert list(eff) == SERVE_KEYS, r.stdout
    # every key but `https`, left commented out so that a certificate alone brings the defaults,
    # and `threads`, whose default follows the machine
    assert all(origin == str(PACKAGING_YAML) for k, (_, origin) in eff.items() if k not in ("https", "threads")), r.stdout
    assert eff["https"] == ("[]", "default")
    assert eff["threads"] == PASS_THREADS, r.stdout
    assert eff["data"][0] == '"/var/lib/relay"'
    assert eff["http"][0] == '["127.0.0.1:8080", "[::1]:8080"]'
    assert eff["metrics"][0] == "[]"
    assert eff["period"][0] == "300s" and eff["max-sessions"][0] == "65536" and eff["log-level"][0] == "info"
    # the output is itself a config file that check-config accepts with the same values
    again = workdir / "effective.yaml"
    again.write_text(r.stdout)
    r2 = check_config("--config", again)
    assert r2.returncode == 0, r2.stderr
    assert {k: v for k, (v, _) in effective(r2.stdout).items()} == {k: v for k, (v, _) in eff.items()}


def test_check_config_without_file_prints_defaults():
    r = check_config()
    assert r.returncode == 0, r.stderr
    eff = effective(r.stdout)
    assert list(eff) == SERVE_KEYS
    assert all(origin == "default" for k, (_, origin) in eff.items() if k != "threads"), r.stdout
    assert eff["threads"] == PASS_THREADS, r.stdout


def test_threads_from_flag_variable_file_and_default(workdir):
    """`threads`: the flag over RELAY_THREADS over the file; unset, the online CPUs (at most 16)."""
    cfg = write_yaml(workdir / "t.yaml", {"threads": 3})
    eff = effective(check_config("--config", cfg, env=env_with(RELAY_THREADS=None)).stdout)
    assert eff["threads"] == ("3", str(cfg))
    eff = effective(check_config("--config", cfg, env=env_with(RELAY_THREADS=5)).stdout)
    assert eff["threads"] == ("5", "RELAY_THREADS")
    eff = effective(check_config("--config", cfg, "--threads", "64", env=env_with(RELAY_THREADS=5)).stdout)
    assert eff["threads"] == ("64", "--threads")
    online = os.sysconf("SC_NPROCESSORS_ONLN")
    eff = effective(check_config(env=env_with(RELAY_THREADS=None)).stdout)
    assert eff["threads"] == (str(min(16, max(1, online))), "default")


@pytest.mark.parametrize("value", ["0", "65", "-1"])
def test_threads_flag_out_of_range_is_refused(value):
    r = check_config(f"--threads={value}")
    assert r.returncode == 64, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr == "Error: --threads: must be from 1 to 64 loop threads\n", r.stderr


def test_threads_flag_not_a_number_is_refused():
    r = check_config("--threads", "abc")
    assert r.returncode == 64, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert "'abc'" in r.stderr and "--threads" in r.stderr, r.stderr


def test_serve_help_gives_the_threads_default():
    r = run_relay(["serve", "--help"])
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "--threads <n>" in text and "(default: the online CPUs, at most 16)" in text, r.stdout


def test_every_setting_is_a_serve_flag():
    """The settings table (check-config's keys) and serve's flags are the same set: a row
    without its @Option, or an @Option without its row, fails here."""
    r = run_relay(["serve", "--help"])
    assert r.returncode == 0, r.stderr
    flags = set(re.findall(r"^\s+--([a-z][a-z-]*)", r.stdout, re.M)) - {"config", "help", "version"}
    assert flags == set(SERVE_KEYS), r.stdout


def test_print_settings_table_lists_every_key():
    r = check_config("--print-settings-table")
    assert r.returncode == 0, r.stderr
    rows = re.findall(r"^\| `--([a-z-]+)` \|", r.stdout, re.M)
    assert rows == SERVE_KEYS + ["config"], r.stdout
    assert "| `--max-sessions-per-device` | `64` | applied |" in r.stdout


# (name, file text or None for a missing file, extra environment, expected stderr (a regex; FILE = the path))
BAD = [
    ("unknown_key", "perod: 120\n", {}, r"Error: perod \(from FILE\): unknown key \(known keys: .*\bperiod\b"),
    ("period_abc", 'period: "abc"\n', {}, r"Error: period \(from FILE\): 'abc' is not a duration"),
    ("http_scalar", 'http: "127.0.0.1:8080"\n', {}, r"Error: http \(from FILE\): must be a list of strings"),
    ("period_list", "period: [1, 2]\n", {}, r"Error: period \(from FILE\): must be a single value"),
    ("log_level", "log-level: loud\n", {}, r"Error: log-level \(from FILE\): 'loud' is not one of .*debug"),
    ("keepalive_env", "period: 30\n", {"RELAY_KEEPALIVE": "30"},
     r"Error: keepalive \(from RELAY_KEEPALIVE\): must be shorter than --period \(got keepalive 30s, period 30s\)"),
    ("keepalive_file", "period: 20\nkeepalive: 20\n", {},
     r"Error: keepalive \(from FILE\): must be shorter than --period"),
    ("period_env_abc", "period: 30\n", {"RELAY_PERIOD": "abc"}, r"Error: period \(from RELAY_PERIOD\): 'abc'"),
    ("threads_zero", "threads: 0\n", {"RELAY_THREADS": None},
     r"Error: threads \(from FILE\): must be from 1 to 64 loop threads$"),
    ("threads_65", "threads: 65\n", {"RELAY_THREADS": None},
     r"Error: threads \(from FILE\): must be from 1 to 64 loop threads$"),
    ("threads_env_abc", "threads: 2\n", {"RELAY_THREADS": "abc"},
     r"Error: threads \(from RELAY_THREADS\): 'abc' is not a whole number$"),
    ("threads_env_zero", "", {"RELAY_THREADS": "0"},
     r"Error: threads \(from RELAY_THREADS\): must be from 1 to 64 loop threads$"),
    ("missing_file", None, {}, r"Error: --config: cannot read FILE: no such file"),
    ("invalid_yaml", 'http: ["127.0.0.1:8080"\nperiod: 120\n', {}, r"Error: --config: FILE is not valid YAML"),
    ("not_a_mapping", "- period\n- 120\n", {}, r"Error: --config: FILE must be a mapping"),
]


def bad_config(workdir: Path, name: str, text: Optional[str]) -> Path:
    path = workdir / f"bad-{name}.yaml"
    if text is not None:
        path.write_text(text)
    return path


def expect_error(stderr: str, pattern: str, path: Path):
    rx = pattern.replace("FILE", re.escape(str(path)))
    assert re.match(rx, stderr), f"stderr does not match {rx!r}:\n{stderr}"


@pytest.mark.parametrize("name,text,env,pattern", BAD, ids=[b[0] for b in BAD])
def test_check_config_bad_exits_64_naming_key_and_origin(workdir, name, text, env, pattern):
    path = bad_config(workdir, name, text)
    r = check_config("--config", path, env=env_with(**env))
    assert r.returncode == 64, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "", "nothing printed on stdout for a bad configuration"
    expect_error(r.stderr, pattern, path)
    assert r.stderr.count("Error:") == 1, r.stderr
    assert "USAGE" not in r.stderr.upper(), "a configuration error is not a usage error"


@pytest.mark.parametrize("name,text,env,pattern", BAD, ids=[b[0] for b in BAD])
@pytest.mark.timeout(30)
def test_serve_with_bad_config_exits_at_once(workdir, cleanup, name, text, env, pattern):
    path = bad_config(workdir, name, text)
    port = free_port()
    listen = ["--http", f"127.0.0.1:{port}", "--udp", f"127.0.0.1:{free_port(kind='udp')}",
              "--tcp", f"127.0.0.1:{free_port()}", "--data", workdir / "data"]
    # the listener flags keep a relay that wrongly starts off the default ports
    p = Proc([relay_bin(), "serve", "--config", path] + listen, workdir, f"serve-{name}", env=env_with(**env))
    cleanup.append(p.stop)
    t0 = time.monotonic()
    rc = p.wait(15)
    assert rc is not None, f"relay serve with a bad config still running after 15s\n{p.describe()}"
    assert rc == 64, p.describe()
    assert time.monotonic() - t0 < 10
    assert "relay.ready" not in p.stderr()
    expect_error(p.stderr(), pattern, path)
    # the same message as check-config
    r = check_config("--config", path, *[str(a) for a in listen], env=env_with(**env))
    assert r.stderr == p.stderr()


@pytest.mark.parametrize("text", ["", "# everything commented out\n#period: 120\n"], ids=["empty", "comments"])
def test_check_config_empty_file_sets_nothing(workdir, text):
    path = workdir / "empty.yaml"
    path.write_text(text)
    r = check_config("--config", path)
    assert r.returncode == 0, r.stderr
    eff = effective(r.stdout)
    assert all(origin == "default" for k, (_, origin) in eff.items() if k != "threads"), r.stdout
    assert eff["threads"] == PASS_THREADS, r.stdout


# ---------------------------------------------------------------- 4. SIGHUP


@pytest.mark.timeout(60)
def test_sighup_threads_change_needs_a_restart(config_relay):
    """The loops are made at start: a reload that changes `threads` names it and keeps the running count."""
    relay = config_relay({"threads": 1, "period": 300}, env={"RELAY_THREADS": None})
    relay.write_config(threads=2, period=120)
    relay.hup()
    warn = relay.wait_log("config.reload.restart_needed", 1)[0]
    assert metadata(warn, "keys") == "threads", warn
    line = relay.wait_log("config.reloaded", 1)[0]
    assert metadata(line, "applied") == "period" and metadata(line, "restart_needed") == "threads", line
    relay.wait_metric("relay_max_access_period_seconds", lambda v: v == 120, timeout=10)
    assert relay.healthy()
    # a core that reports its loops still runs the one it started with
    if ("relay_threads", ()) in relay.metrics():
        assert relay.metrics()("relay_threads") == 1


@pytest.mark.timeout(90)
def test_sighup_applies_reports_and_refuses(config_relay, fake_devices):
    relay = config_relay({"period": 300, "log-level": "info"})
    assert relay.period() == 300
    relay.add_device("hup1")
    relay.add_device("hup2")
    relay.add_device("hup3")
    dev = relay.fake_device("hup1")
    fake_devices.append(dev)
    assert dev.info.period == 300
    host_routed = {**relay.auth("hup1"), "Host": f"hup1.localhost:{relay.http_port}"}
    assert requests.get(relay.url("/"), headers=host_routed, timeout=T).status_code == 503  # known, offline
    assert not re.search(r"^\S+ debug ", relay.stderr(), re.M), "debug lines at log-level info"

    # reloadable keys: applied
    relay.write_config(period=120, log_level="debug")
    relay.hup()
    relay.wait_metric("relay_max_access_period_seconds", lambda v: v == 120, timeout=10)
    line = relay.wait_log("config.reloaded", 1)[0]
    assert set(metadata(line, "applied").split(",")) == {"period", "log-level"}, line
    assert metadata(line, "restart_needed") == "", line
    assert count(relay.stderr(), "config.reload.restart_needed") == 0
    dev2 = relay.fake_device("hup2")
    fake_devices.append(dev2)
    assert (dev2.info.period, dev2.info.keepalive) == (120, 25), dev2.info

    # a key that needs a restart: named, kept, relay still serving
    relay.write_config(period=120, log_level="debug", domain="example.test")
    relay.hup()
    warn = relay.wait_log("config.reload.restart_needed", 1)[0]
    assert metadata(warn, "keys") == "domain", warn
    line = relay.wait_log("config.reloaded", 2)[1]
    assert metadata(line, "applied") == "" and metadata(line, "restart_needed") == "domain", line
    assert relay.healthy()
    assert relay.period() == 120
    # the running domain is still localhost
    assert requests.get(relay.url("/"), headers=host_routed, timeout=T).status_code == 503

    # an invalid value: nothing changes
    relay.write_config(period=Raw('"abc"'), log_level="debug")
    relay.hup()
    failed = relay.wait_log("config.reload.failed", 1)[0]
    assert "period" in failed and "abc" in failed, failed
    time.sleep(0.3)
    assert count(relay.stderr(), "config.reloaded") == 2, "a failed reload must not log config.reloaded"
    assert relay.healthy()
    assert relay.period() == 120
    dev3 = relay.fake_device("hup3")
    fake_devices.append(dev3)
    assert dev3.info.period == 120

    # an unknown key on reload is refused too, naming it
    relay.write_config(period=60, perod=30)
    relay.hup()
    failed = relay.wait_log("config.reload.failed", 2)[1]
    assert "perod" in failed and "unknown key" in failed, failed
    assert relay.period() == 120

    assert relay.stop() == 0, relay.stderr()
    # log-level debug (from the first reload) was in force to the end
    assert re.search(r"^\S+ debug ", relay.stderr(), re.M), relay.stderr()[-3000:]


@pytest.mark.timeout(60)
def test_sighup_keeps_flag_and_env_over_the_file(config_relay):
    relay = config_relay({"period": 300, "idle-link": "60s"}, extra=["--period", "60"], env={"RELAY_IDLE_LINK": "30s"})
    assert relay.period() == 60
    relay.write_config(period=200, idle_link="10s", header_timeout="5s")
    relay.hup()
    line = relay.wait_log("config.reloaded", 1)[0]
    assert metadata(line, "applied") == "header-timeout", line
    assert relay.period() == 60
    assert relay.healthy()


@pytest.mark.timeout(60)
def test_sighup_when_the_file_is_gone_keeps_running(config_relay):
    relay = config_relay({"period": 90})
    relay.config_path.unlink()
    relay.hup()
    failed = relay.wait_log("config.reload.failed", 1)[0]
    assert str(relay.config_path) in failed, failed
    assert relay.healthy() and relay.period() == 90


# ---------------------------------------------------------------- 5. relay agent --config


def write_key(path: Path, secret: str, mode: int) -> Path:
    path.write_text(secret + "\n")
    os.chmod(path, mode)
    return path


def start_agent(workdir: Path, cleanup, name: str, config: Path, env: Optional[dict] = None,
                impl: str = "swift") -> Proc:
    p = Proc(agent_command(impl) + ["--config", config], workdir, name, env=env_with(**(env or {})))
    cleanup.append(p.stop)
    return p


def wait_notified(relay: Relay, agent: Proc, before, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not agent.alive():
            pytest.fail(f"agent exited with {agent.p.returncode}\n{agent.describe()}")
        if relay.metrics()("relay_notify_total", kind="a") > before("relay_notify_total", kind="a"):
            return
        time.sleep(0.1)
    pytest.fail(f"agent sent no accepted NOTIFY_A within {timeout}s\n{agent.describe()}\n{relay.proc.describe()}")


def fetch_through(relay: Relay, device_id: str, path: str) -> requests.Response:
    r = requests.get(relay.dev_url(device_id, path), headers=relay.auth(device_id), timeout=T)
    assert r.status_code == 200, (r.status_code, r.text)
    return r


@both_agents
@pytest.mark.timeout(60)
def test_agent_from_config_file_serves_pages(relay_factory, recording_server, workdir, cleanup, agent_impl):
    relay = relay_factory()
    srv = recording_server()
    secret = relay.add_device("cfgagent1")
    key = write_key(workdir / "cfgagent1.key", secret, 0o600)
    cfg = write_yaml(workdir / "agent.yaml", {"relay": hostport(relay.host, relay.udp_port), "id": "cfgagent1",
                                              "key-file": str(key), "forward": hostport("127.0.0.1", srv.port),
                                              "log-level": "info"})
    before = relay.metrics()
    agent = start_agent(workdir, cleanup, "agent-cfg1", cfg, impl=agent_impl)
    wait_notified(relay, agent, before)
    r = fetch_through(relay, "cfgagent1", "/via-config?x=1")
    assert r.json()["path"] == "/via-config?x=1", r.text
    assert "/via-config?x=1" in srv.paths()
    assert secret not in agent.stderr() + agent.stdout(), "the agent logged its secret"


@both_agents
def test_agent_key_file_readable_by_others_is_refused(workdir, cleanup, agent_impl):
    secret = "ab" * 32
    key = write_key(workdir / "open.key", secret, 0o644)
    cfg = write_yaml(workdir / "agent.yaml", {"relay": "127.0.0.1:9", "id": "cfgagent2", "key-file": str(key),
                                              "forward": "127.0.0.1:9"})
    agent = start_agent(workdir, cleanup, "agent-open-key", cfg, impl=agent_impl)
    rc = agent.wait(15)
    assert rc is not None, f"agent with a mode-644 key file still running\n{agent.describe()}"
    assert rc == 64, agent.describe()
    err = agent.stderr()
    assert re.match(rf"Error: key-file \(from {re.escape(str(cfg))}\): {re.escape(str(key))} can be read by others "
                    r"\(mode 644\) and holds the secret; chmod 600 it", err), err
    assert secret not in err + agent.stdout()


@both_agents
@pytest.mark.timeout(60)
def test_agent_missing_forward_is_named_and_env_fills_it(relay_factory, recording_server, workdir, cleanup, agent_impl):
    relay = relay_factory()
    srv = recording_server()
    secret = relay.add_device("cfgagent3")
    key = write_key(workdir / "cfgagent3.key", secret, 0o600)
    cfg = write_yaml(workdir / "agent.yaml", {"relay": hostport(relay.host, relay.udp_port), "id": "cfgagent3",
                                              "key-file": str(key)})
    agent = start_agent(workdir, cleanup, "agent-no-forward", cfg, impl=agent_impl)
    rc = agent.wait(15)
    assert rc == 64, agent.describe()
    err = agent.stderr()
    assert err.startswith("Error: --forward: missing"), err
    assert "RELAY_AGENT_FORWARD" in err and "'forward'" in err, err

    before = relay.metrics()
    agent = start_agent(workdir, cleanup, "agent-env-forward", cfg,
                        env={"RELAY_AGENT_FORWARD": hostport("127.0.0.1", srv.port)}, impl=agent_impl)
    wait_notified(relay, agent, before)
    r = fetch_through(relay, "cfgagent3", "/from-env")
    assert r.json()["path"] == "/from-env", r.text
    assert "/from-env" in srv.paths()


@both_agents
@pytest.mark.timeout(60)
def test_agent_env_overrides_file(relay_factory, recording_server, workdir, cleanup, agent_impl):
    """RELAY_AGENT_FORWARD wins over the file's forward."""
    relay = relay_factory()
    srv = recording_server()
    secret = relay.add_device("cfgagent4")
    key = write_key(workdir / "cfgagent4.key", secret, 0o600)
    cfg = write_yaml(workdir / "agent.yaml", {"relay": hostport(relay.host, relay.udp_port), "id": "cfgagent4",
                                              "key-file": str(key), "forward": "127.0.0.1:9"})
    before = relay.metrics()
    agent = start_agent(workdir, cleanup, "agent-env-wins", cfg,
                        env={"RELAY_AGENT_FORWARD": hostport("127.0.0.1", srv.port)}, impl=agent_impl)
    wait_notified(relay, agent, before)
    assert fetch_through(relay, "cfgagent4", "/env-wins").json()["path"] == "/env-wins"


@pytest.mark.parametrize("text,pattern", [
    ("relay: 127.0.0.1:9\nid: x\nkey_file: /k\n", r"Error: key_file \(from FILE\): unknown key"),
    ("relay: 127.0.0.1:9\nforward: 127.0.0.1:9\nkey: " + "ab" * 32 + "\n",
     r"Error: --id: missing: give --id, RELAY_AGENT_ID or 'id' in a --config file"),
    ("relay: 127.0.0.1:9\nid: x\nforward: 127.0.0.1:9\n", r"Error: --key: .*--key or --key-file"),
    ("relay: 127.0.0.1:9\nid: x\nforward: 127.0.0.1:9\nkey-file: FILE.nokey\n",
     r"Error: key-file \(from FILE\): cannot read"),
    ("relay: 127.0.0.1:9\nid: x\nforward: 127.0.0.1:9\nkey: " + "ab" * 32 + "\n",
     r"Error: --config: FILE can be read by others \(mode 644\) and holds the secret"),
    ("relay: 127.0.0.1:9\nid: x\nforward: 127.0.0.1:9\nkey: zz\n",
     r"Error: key \(from FILE\): must be the 64 hex digit secret"),
], ids=["unknown_key", "missing_id", "missing_key", "unreadable_key_file", "public_config_with_key", "bad_key"])
@both_agents
def test_agent_bad_config_exits_64(workdir, text, pattern, request, agent_impl):
    path = workdir / "agent-bad.yaml"
    path.write_text(text.replace("FILE", str(path)))
    # a config file holding the secret must be private; only that case leaves it readable
    path.chmod(0o644 if "public_config_with_key" in request.node.callspec.id else 0o600)
    if agent_impl == "swift":
        r = run_relay(["agent", "--config", path], timeout=15)
    else:
        r = subprocess.run([str(a) for a in agent_command("c") + ["--config", path]], capture_output=True,
                           text=True, timeout=15, stdin=subprocess.DEVNULL, env=env_with())
    assert r.returncode == 64, (r.returncode, r.stderr)
    expect_error(r.stderr, pattern, path)


@pytest.mark.parametrize("text,env", [
    ('tcp: ["127.0.0.1:1\\nrelay.ready http=forged"]\n', {}),
    ("period: 1\n", {"RELAY_KEEPALIVE": "5\nkeepalive: 1"}),
    ('domain: "a\\u2028b"\n', {}),
], ids=["file_value", "variable_value", "unicode_separator"])
def test_errors_stay_on_one_line_whatever_the_value(workdir, text, env):
    # A value with line breaks must not turn one error into several log lines (a forged
    # relay.ready among them): found by `make fuzz-config`.
    path = bad_config(workdir, "breaks", text)
    r = check_config("--config", path, env=env_with(**env))
    assert r.returncode == 64, r
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: "), repr(r.stderr)
    assert "\u2028" not in r.stderr
