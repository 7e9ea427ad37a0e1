#!/usr/bin/env python3
"""TLS on both legs, measured beside haproxy in the same run.

    python3 bench/tls_compare.py [--relay-bin PATH] [--duration 10] [--json FILE]

Starts, on loopback: an nginx origin serving small.bin (128 B) and bulk.bin (64 MiB); the
relay with TLS on both legs (HTTPS for terminals, TLS device callbacks) and a real
`relay agent --ca` in front of the origin; haproxy terminating TLS and re-encrypting to an
nginx TLS listener in front of the same files (TLS on both legs, as the relay); haproxy
terminating TLS to the plain origin (one leg). wrk drives each over HTTPS with keep-alive:
small requests (32 connections) and bulk transfer (4 connections). Prints a table with
requests/s, MiB/s and the relay's ratio to each haproxy setup. Needs nginx, haproxy and wrk
(apt-get install -y nginx-light haproxy wrk); every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Procs:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, args: list, **kw) -> subprocess.Popen:
        p = subprocess.Popen([str(a) for a in args], stdout=open(self.tmp / f"{name}.out", "wb"),
                             stderr=open(self.tmp / f"{name}.err", "wb"), stdin=subprocess.DEVNULL,
                             start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def wrk(url: str, connections: int, seconds: int, header: str | None = None) -> dict:
    cmd = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", url]
    if header:
        cmd[1:1] = ["-H", header]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    rate = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[rate.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "mib_s": float(rate.group(1)) * scale / (1 << 20),
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--relay-bin", default=os.environ.get("RELAY_BIN", str(REPO / ".build/release/relay")))
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--json", help="also write the figures here")
    o = ap.parse_args()
    for tool in ("nginx", "haproxy", "wrk", "openssl"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is not installed (apt-get install -y nginx-light haproxy wrk)", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    relay = Path(o.relay_bin)
    tmp = Path(tempfile.mkdtemp(prefix="tls-bench-"))
    procs = Procs(tmp)
    results: dict = {}
    try:
        subprocess.run(["bash", REPO / "scripts/make-test-certs.sh", tmp / "tls", "relay.test"], check=True,
                       capture_output=True)
        tls = tmp / "tls"
        (tls / "both.pem").write_bytes((tls / "relay.pem").read_bytes() + (tls / "relay.key").read_bytes())
        www = tmp / "www"
        www.mkdir()
        (www / "small.bin").write_bytes(b"a" * 128)
        with open(www / "bulk.bin", "wb") as f:
            f.truncate(64 << 20)

        origin, origin_tls = free_port(), free_port()
        user = "user root;\n" if os.geteuid() == 0 else ""
        (tmp / "nginx.conf").write_text(f"""{user}worker_processes 1; daemon off; pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 10000000;
  default_type application/octet-stream;
  server {{ listen 127.0.0.1:{origin}; root {www}; }}
  server {{ listen 127.0.0.1:{origin_tls} ssl; ssl_certificate {tls}/relay.pem;
           ssl_certificate_key {tls}/relay.key; root {www}; }}
}}
""")
        procs.start("nginx", [nginx, "-c", tmp / "nginx.conf"])
        wait_port(origin)

        h_both, h_one = free_port(), free_port()
        (tmp / "haproxy.cfg").write_text(f"""global
  maxconn 4000
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend both
  bind 127.0.0.1:{h_both} ssl crt {tls}/both.pem
  default_backend origin_tls
frontend one
  bind 127.0.0.1:{h_one} ssl crt {tls}/both.pem
  default_backend origin
backend origin_tls
  server o 127.0.0.1:{origin_tls} ssl verify required ca-file {tls}/ca.pem verifyhost relay.test
backend origin
  server o 127.0.0.1:{origin}
""")
        procs.start("haproxy", [haproxy, "-f", tmp / "haproxy.cfg"])
        wait_port(h_both)

        http, https, udp, tcp = free_port(), free_port(), free_port(), free_port()
        data = tmp / "relay-data"
        secret = subprocess.run([relay, "device", "add", "web", "--data", data], capture_output=True, text=True,
                                check=True).stdout.strip()
        token = subprocess.run([relay, "token", "web", "--data", data], capture_output=True, text=True,
                               check=True).stdout.strip()
        procs.start("relay", [relay, "serve", "--data", data, "--http", f"127.0.0.1:{http}", "--https",
                              f"127.0.0.1:{https}", "--udp", f"127.0.0.1:{udp}", "--tcp", f"127.0.0.1:{tcp}",
                              "--tls-cert", tls / "relay.pem", "--tls-key", tls / "relay.key", "--log-level",
                              "warning", "--max-conns-per-source", "0", "--conn-rate-per-source", "0",
                              "--max-sessions-per-device", "0", "--wakes-per-device-minute", "0"])
        wait_port(https)
        procs.start("agent", [relay, "agent", "--relay", f"127.0.0.1:{udp}", "--id", "web", "--key", secret,
                              "--forward", f"127.0.0.1:{origin}", "--ca", tls / "ca.pem", "--tls-name", "relay.test"])
        time.sleep(1.5)

        auth = f"Authorization: Bearer {token}"
        targets = [
            ("relay", "relay, TLS both legs", f"https://127.0.0.1:{https}/d/web", auth),
            ("haproxy_both", "haproxy, TLS both legs", f"https://127.0.0.1:{h_both}", None),
            ("haproxy_one", "haproxy, TLS to terminals only", f"https://127.0.0.1:{h_one}", None),
        ]
        for key, _, base, header in targets:
            r = wrk(base + "/small.bin", 2, 1, header)  # warm: wakes, handshakes
            if r["non2xx"] or r["rps"] == 0:
                raise RuntimeError(f"{key} does not serve: {r}")
            results[key] = {"small": wrk(base + "/small.bin", 32, o.duration, header),
                            "bulk": wrk(base + "/bulk.bin", 4, o.duration, header)}
    except Exception:
        for log in sorted(tmp.glob("*.err")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}", file=sys.stderr)
        raise
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"TLS on both legs, {platform.node()}, {os.cpu_count()} cores, wrk -t2, {o.duration}s per run")
    print(f"  command: python3 bench/tls_compare.py --relay-bin {relay} --duration {o.duration}")
    print(f"  {'':34} {'small req/s (c=32)':>20} {'bulk MiB/s (c=4)':>18}")
    for key, label, _, _ in targets:
        r = results[key]
        print(f"  {label:34} {r['small']['rps']:>20,.0f} {r['bulk']['mib_s']:>18,.1f}")
    for key in ("haproxy_both", "haproxy_one"):
        small = results["relay"]["small"]["rps"] / results[key]["small"]["rps"]
        bulk = results["relay"]["bulk"]["mib_s"] / results[key]["bulk"]["mib_s"]
        results[f"ratio_vs_{key}"] = {"small": small, "bulk": bulk}
        print(f"  relay / {key:13} small {small:.2f}   bulk {bulk:.2f}")
    if o.json:
        Path(o.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
