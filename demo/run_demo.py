#!/usr/bin/env python3
"""The relay demo: one relay, two devices behind real agents, links for your browser.

In a temporary data directory it provisions two devices (cam1, a camera, and thermo1, a
thermostat), starts `relay serve` on loopback, one sample web server per device
(demo/device_server.py) and one `relay agent` per device, mints 24 h tokens, waits until
both devices answer through the relay, prints "demo ready" and a URL per device, then runs
until Ctrl-C / SIGTERM (or --duration) and stops every process it started.

    python3 demo/run_demo.py [--relay-bin PATH] [--http-port 8080] [--ready-file FILE]
                             [--duration SECONDS] [--keep]

Standard library only. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
DEVICE_SERVER = Path(__file__).resolve().parent / "device_server.py"
HOST = "127.0.0.1"
DEVICES = [("cam1", "camera"), ("thermo1", "thermostat")]

READY_RE = re.compile(r"relay\.ready http=(\S+) udp=(\S+) tcp=(\S+) metrics=(\S*)")
DEVICE_READY_RE = re.compile(r"device_server\.ready .*\bport=(\d+)")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class DemoError(Exception):
    """A step failed; the message says which and what to try."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived before the demo was up."""


_stop_requested = False


def _on_signal(signum, frame):
    global _stop_requested
    _stop_requested = True


def check_stop():
    if _stop_requested:
        raise Interrupted()


def _die_with_parent():
    """Runs in each child before exec: if the demo itself is killed (even with SIGKILL),
    Linux sends the child SIGTERM, so nothing outlives it."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # not Linux/glibc: the normal stop path still applies
        pass


class Child:
    """A started process whose stdout and stderr go to one log file."""

    def __init__(self, name: str, args: list, logdir: Path):
        self.name = name
        self.log = logdir / f"{name}.log"
        with open(self.log, "wb") as f:
            self.p = subprocess.Popen([str(a) for a in args], stdin=subprocess.DEVNULL, stdout=f,
                                      stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def alive(self) -> bool:
        return self.p.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 15) -> str:
        return "\n".join("    " + l for l in self.text().splitlines()[-n:])

    def wait_for_line(self, pattern: re.Pattern, timeout: float) -> re.Match:
        """Polls the log until `pattern` appears; fails if the process exits or time runs out."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            check_stop()
            m = pattern.search(self.text())
            if m:
                return m
            if not self.alive():
                raise DemoError(f"{self.name} exited with status {self.p.returncode}:\n{self.tail()}")
            time.sleep(0.1)
        raise DemoError(f"{self.name} not ready within {timeout:.0f}s:\n{self.tail()}")


def stop_all(children: list, timeout: float = 5.0):
    """SIGTERM to all (agents first, relay last), then wait; SIGKILL what is left."""
    for c in reversed(children):
        if c.alive():
            c.p.send_signal(signal.SIGTERM)
    end = time.monotonic() + timeout
    for c in reversed(children):
        try:
            c.p.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"demo: {c.name} ignored SIGTERM for {timeout:.0f}s; killing it", file=sys.stderr)
            c.p.kill()
            c.p.wait(5)


def cli(relay_bin: Path, data: Path, *args) -> str:
    """Runs a one-shot relay subcommand against the demo's store; returns its stdout."""
    cmd = [str(relay_bin), *args, "--data", str(data)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DemoError(f"`relay {' '.join(args)}` did not finish within 30s")
    if r.returncode != 0:
        raise DemoError(f"`relay {' '.join(args)}` failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def single_line(out: str, what: str, pattern: Optional[re.Pattern] = None) -> str:
    lines = [l.strip() for l in out.splitlines() if l.strip()]
    if pattern:
        lines = [l for l in lines if pattern.match(l)]
    if len(lines) != 1:
        raise DemoError(f"expected one {what} line, got: {out!r}")
    return lines[0]


def split_hostport(s: str) -> tuple:
    """'127.0.0.1:8080' (first of a comma-separated list) -> ('127.0.0.1', 8080)."""
    host, _, port = s.split(",")[0].rpartition(":")
    return host.strip("[]"), int(port)


def http_status(port: int, host_header: str, path: str, token: str) -> int:
    """GET through the relay on loopback with a given Host header (no DNS, no proxy)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host_header, "Authorization": f"Bearer {token}"})
        r = conn.getresponse()
        r.read()
        return r.status
    except OSError:
        return 0
    finally:
        conn.close()


def default_relay_bin() -> Path:
    if os.environ.get("RELAY_BIN"):
        return Path(os.environ["RELAY_BIN"])
    release = REPO / ".build" / "release" / "relay"
    return release if release.exists() else REPO / ".build" / "debug" / "relay"


def run(args) -> int:
    relay_bin = Path(args.relay_bin) if args.relay_bin else default_relay_bin()
    if not relay_bin.is_absolute() and (REPO / relay_bin).exists():
        relay_bin = REPO / relay_bin
    if not relay_bin.exists():
        raise DemoError(f"relay binary not found at {relay_bin}: run `make release` (or `swift build`) first, "
                        "or pass --relay-bin / set RELAY_BIN")

    work = Path(tempfile.mkdtemp(prefix="relay-demo-"))
    data, logs = work / "data", work / "logs"
    logs.mkdir()
    children: list = []
    try:
        # Devices and tokens go straight into the fresh store: the relay loads them at start.
        secrets, tokens = {}, {}
        for dev_id, _ in DEVICES:
            secrets[dev_id] = single_line(cli(relay_bin, data, "device", "add", dev_id), "secret", HEX64)
            tokens[dev_id] = single_line(cli(relay_bin, data, "token", dev_id, "--ttl", "24h"), "token")

        relay = Child("relay", [relay_bin, "serve", "--data", data, "--http", f"{HOST}:{args.http_port}",
                                "--udp", f"{HOST}:0", "--tcp", f"{HOST}:0", "--metrics", f"{HOST}:0"], logs)
        children.append(relay)
        try:
            m = relay.wait_for_line(READY_RE, 30)
        except DemoError as e:
            if "already in use" in relay.text():
                raise DemoError(f"{e}\nport {args.http_port} is taken (is `make run` up?): "
                                "try --http-port 8081, or 0 for any free port")
            raise
        http_addr, udp_addr, tcp_addr, metrics_addr = m.groups()
        http_port = split_hostport(http_addr)[1]
        udp_port = split_hostport(udp_addr)[1]

        devices = []
        for dev_id, kind in DEVICES:
            srv = Child(f"{dev_id}-server", [sys.executable, DEVICE_SERVER, "--name", dev_id, "--kind", kind,
                                             "--host", HOST, "--port", "0"], logs)
            children.append(srv)
            dev_port = int(srv.wait_for_line(DEVICE_READY_RE, 15).group(1))
            agent = Child(f"{dev_id}-agent", [relay_bin, "agent", "--relay", f"{HOST}:{udp_port}", "--id", dev_id,
                                              "--key", secrets[dev_id], "--forward", f"{HOST}:{dev_port}"], logs)
            children.append(agent)
            tok = tokens[dev_id]
            devices.append({
                "id": dev_id, "kind": kind, "token": tok, "device_port": dev_port,
                # Browsers get host routing: each device is its own origin, so the cookie the
                # relay trades for ?relay_token= is that device's alone. Path routing puts
                # every device on one origin and takes the token only in Authorization.
                "browser_url": f"http://{dev_id}.localhost:{http_port}/?relay_token={tok}",
                "api_url": f"http://{HOST}:{http_port}/d/{dev_id}/api/status",
                "api_curl": f"curl -H 'Authorization: Bearer {tok}' http://{HOST}:{http_port}/d/{dev_id}/api/status",
            })

        # Ready means both routes answer 200 for every device: the agents have notified and
        # the relay can wake them. Until then the relay answers 503 (offline).
        end = time.monotonic() + 30
        pending = {d["id"] for d in devices}
        while pending:
            check_stop()
            for c in children:
                if not c.alive():
                    raise DemoError(f"{c.name} exited with status {c.p.returncode}:\n{c.tail()}")
            for dev_id in sorted(pending):
                tok = tokens[dev_id]
                if (http_status(http_port, f"{dev_id}.localhost:{http_port}", "/", tok) == 200
                        and http_status(http_port, f"{HOST}:{http_port}", f"/d/{dev_id}/", tok) == 200):
                    pending.discard(dev_id)
            if pending and time.monotonic() > end:
                raise DemoError(f"devices {sorted(pending)} not reachable through the relay within 30s:\n"
                                + "\n".join(f"  {c.name}:\n{c.tail(8)}" for c in children))
            time.sleep(0.2)

        info = {"relay": {"http": http_addr, "udp": udp_addr, "tcp": tcp_addr, "metrics": metrics_addr},
                "http_port": http_port, "data": str(data), "logs": str(logs), "pid": os.getpid(),
                "pids": {c.name: c.p.pid for c in children}, "devices": devices}
        print_banner(info)
        if args.ready_file:
            tmp = Path(args.ready_file + ".tmp")
            tmp.write_text(json.dumps(info, indent=2))
            tmp.replace(args.ready_file)  # atomic: a reader never sees half a file

        # Serve until asked to stop; a child dying on its own ends the demo with an error.
        deadline = time.monotonic() + args.duration if args.duration else None
        while not _stop_requested and (deadline is None or time.monotonic() < deadline):
            for c in children:
                if not c.alive():
                    raise DemoError(f"{c.name} exited unexpectedly with status {c.p.returncode}:\n{c.tail()}")
            time.sleep(0.5)
        print("\ndemo: stopping", flush=True)
        return 0
    finally:
        stop_all(children)
        if args.keep:
            print(f"demo: logs and store kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def print_banner(info: dict):
    r = info["relay"]
    out = [f"demo ready: relay http={r['http']} udp={r['udp']} tcp={r['tcp']} metrics=http://{r['metrics']}/metrics",
           ""]
    for d in info["devices"]:
        out += [f"  {d['id']} ({d['kind']}, web server on {HOST}:{d['device_port']})",
                f"    open in a browser:  {d['browser_url']}",
                "    API client (path routing, token in Authorization only):",
                f"                        {d['api_curl']}",
                ""]
    out.append("Ctrl-C stops the relay, the agents and the device servers.")
    print("\n".join(out), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Relay demo: two devices reachable from your browser.")
    ap.add_argument("--relay-bin", help="relay binary (default: $RELAY_BIN, else .build/release/relay if built, "
                                        "else .build/debug/relay)")
    ap.add_argument("--http-port", type=int, default=8080, help="relay HTTP port on 127.0.0.1 (0: any free port)")
    ap.add_argument("--ready-file", help="write the URLs and pids here as JSON once everything is up")
    ap.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temporary store and logs")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        return run(args)
    except Interrupted:
        print("demo: interrupted", file=sys.stderr)
        return 130
    except DemoError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
