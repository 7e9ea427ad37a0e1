#!/usr/bin/env python3
"""The device agent's footprint, measured beside the same agent in the Swift binary and an
`ssh -R` client holding one reverse tunnel, in the same run.

    python3 bench/agent_footprint.py [--relay-bin PATH] [--agent-bin PATH] [--static-bin PATH]
                                     [--idle 120] [--mib 64] [--json FILE]

Starts, on loopback only: a web origin (in this process) serving MIB MiB; the relay with its
default timers (period 300 s, keepalive 25 s); the C `relay-agent` and the Swift `relay agent`
for one device each; an sshd of its own (throwaway host and client keys, a free port) and
`ssh -N -R` to it with ServerAliveInterval=25 (the agent's keepalive, which a NAT needs too).
Each client's traffic to its server goes through a counting proxy in this process (UDP for the
agents, TCP for ssh), so the idle datagrams and bytes are counted, not computed.

For each client, in turn: stripped binary size (the Swift binary is stripped into a scratch
copy first; a static build where there is one), shared objects mapped, resident and private
memory (/proc/PID/smaps_rollup) idle and at its peak during one MIB MiB download through it,
CPU (utime+stime from /proc/PID/stat) over an idle window of IDLE seconds extrapolated to an
hour, CPU per MiB during the download, and idle datagrams (or TCP segments: reads by the
proxy) and payload bytes over the window extrapolated to an hour. Prints one table; every
process it started is stopped at the end. Timings here are measurements, not assertions.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def wait_for(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- /proc


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def memory(pid: int) -> tuple[int, int]:
    """(Rss, Private_Clean + Private_Dirty) in KiB."""
    rss = private = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        k, _, v = line.partition(":")
        if k == "Rss":
            rss = int(v.split()[0])
        elif k in ("Private_Clean", "Private_Dirty"):
            private += int(v.split()[0])
    return rss, private


def shared_objects(pid: int) -> int:
    libs = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and ".so" in parts[5].rsplit("/", 1)[-1]:
            libs.add(parts[5])
    return len(libs)


class Sampler(threading.Thread):
    """Peak Rss and private memory of a process while it runs."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.stop_flag, self.rss, self.private = pid, threading.Event(), 0, 0

    def run(self):
        while not self.stop_flag.is_set():
            try:
                r, p = memory(self.pid)
            except OSError:
                return
            self.rss, self.private = max(self.rss, r), max(self.private, p)
            time.sleep(0.01)


# ---------------------------------------------------------------- the origin and the proxies


def origin(size: int) -> tuple[http.server.ThreadingHTTPServer, int]:
    chunk = b"x" * MIB

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            n = size if self.path.startswith("/bulk") else 128
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            while n > 0:
                self.wfile.write(chunk[:min(n, MIB)])
                n -= min(n, MIB)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with getattr(self, "lock", threading.Lock()):
            self.up = self.down = self.up_bytes = self.down_bytes = 0

    def add(self, up: bool, n: int):
        with self.lock:
            if up:
                self.up += 1
                self.up_bytes += n
            else:
                self.down += 1
                self.down_bytes += n


class UdpProxy(threading.Thread):
    """client -> 127.0.0.1:port -> target, and back; counts datagrams and payload bytes."""

    def __init__(self, target: int):
        super().__init__(daemon=True)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(("127.0.0.1", target))
        self.client = None
        self.count = Counter()
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            r, _, _ = select.select([self.front, self.back], [], [], 0.2)
            for s in r:
                if s is self.front:
                    data, self.client = self.front.recvfrom(65536)
                    self.count.add(True, len(data))
                    self.back.send(data)
                else:
                    try:
                        data = self.back.recv(65536)
                    except OSError:
                        continue
                    self.count.add(False, len(data))
                    if self.client:
                        self.front.sendto(data, self.client)

    def close(self):
        self.done.set()
        self.join(2)
        self.front.close()
        self.back.close()


class TcpProxy(threading.Thread):
    """One TCP client -> 127.0.0.1:port -> target; counts reads (segments when idle) and bytes."""

    def __init__(self, target: int):
        super().__init__(daemon=True)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        self.target = target
        self.count = Counter()
        self.done = threading.Event()

    def run(self):
        self.lsock.settimeout(0.2)
        while not self.done.is_set():
            try:
                c, _ = self.lsock.accept()
            except OSError:
                continue
            t = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self.pump, args=(c, t), daemon=True).start()

    def pump(self, c, t):
        socks = [c, t]
        while not self.done.is_set():
            r, _, _ = select.select(socks, [], [], 0.2)
            for s in r:
                data = s.recv(262144)
                if not data:
                    c.close()
                    t.close()
                    return
                self.count.add(s is c, len(data))
                (t if s is c else c).sendall(data)

    def close(self):
        self.done.set()
        self.join(2)
        self.lsock.close()


# ---------------------------------------------------------------- processes


class Procs:
    def __init__(self, tmp: Path):
        self.tmp, self.procs = tmp, []

    def start(self, name: str, args: list, **kw) -> subprocess.Popen:
        p = subprocess.Popen([str(a) for a in args], stdout=open(self.tmp / f"{name}.out", "wb"),
                             stderr=open(self.tmp / f"{name}.err", "wb"), stdin=subprocess.DEVNULL,
                             start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def err(self, name: str) -> str:
        try:
            return (self.tmp / f"{name}.err").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, p: subprocess.Popen) -> int | None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


def run(cmd: list, **kw) -> str:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=True, timeout=60,
                          **kw).stdout.strip()


def download(url: str, header: str | None) -> int:
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "120", url]
    if header:
        cmd[1:1] = ["-H", header]
    return int(run(cmd) or 0)


def measure(pid: int, idle_s: float, counter: Counter, url: str, header: str | None, mib: int) -> dict:
    """The idle window, then one download of `mib` MiB through the client."""
    time.sleep(4)  # registration, and the NOTIFY_B confirming a new mapping 3 s after it
    counter.reset()
    t0, c0 = time.monotonic(), cpu_ticks(pid)
    time.sleep(idle_s)
    c1, t1 = cpu_ticks(pid), time.monotonic()
    rss, private = memory(pid)
    with counter.lock:
        dgrams, nbytes = counter.up + counter.down, counter.up_bytes + counter.down_bytes
    window = t1 - t0
    download(url.replace("/bulk", "/small"), header)  # wakes/opens the path first
    sampler = Sampler(pid)
    sampler.start()
    c2, t2 = cpu_ticks(pid), time.monotonic()
    got = download(url, header)
    c3, t3 = cpu_ticks(pid), time.monotonic()
    sampler.stop_flag.set()
    sampler.join()
    if got != mib * MIB:
        raise RuntimeError(f"downloaded {got} bytes, not {mib} MiB")
    return {
        "idle_rss_kib": rss, "idle_private_kib": private,
        "xfer_rss_kib": sampler.rss, "xfer_private_kib": sampler.private,
        "idle_window_s": window, "idle_cpu_ticks": c1 - c0,
        "idle_cpu_s_per_hour": (c1 - c0) / TICK / window * 3600,
        "idle_msgs": dgrams, "idle_bytes": nbytes,
        "msgs_per_hour": dgrams / window * 3600, "bytes_per_hour": nbytes / window * 3600,
        "xfer_cpu_ms_per_mib": (c3 - c2) / TICK * 1000 / mib, "xfer_s": t3 - t2,
        "shared_objects": shared_objects(pid),
    }


def stripped_size(path: Path, tmp: Path) -> int:
    out = tmp / (path.name + ".stripped")
    subprocess.run(["strip", "--strip-all", "-o", str(out), str(path)], check=True, capture_output=True)
    return out.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--relay-bin", default=os.environ.get("RELAY_BIN", str(REPO / ".build/release/relay")))
    ap.add_argument("--agent-bin", default=os.environ.get("RELAY_AGENT_BIN", str(REPO / ".build-agent/relay-agent")))
    ap.add_argument("--static-bin", default=str(REPO / ".build-agent/relay-agent-static"))
    ap.add_argument("--idle", type=float, default=120, help="idle window per client, seconds")
    ap.add_argument("--mib", type=int, default=64, help="download size through each client")
    ap.add_argument("--no-ssh", action="store_true", help="leave out the ssh -R baseline")
    ap.add_argument("--json")
    o = ap.parse_args()
    relay, agent = Path(o.relay_bin).resolve(), Path(o.agent_bin).resolve()
    for b in (relay, agent):
        if not b.exists():
            sys.exit(f"{b} does not exist (swift build -c release; make agent)")
    sshd, ssh = shutil.which("sshd") or "/usr/sbin/sshd", shutil.which("ssh")
    with_ssh = not o.no_ssh and ssh and Path(sshd).exists()

    tmp = Path(tempfile.mkdtemp(prefix="agent-footprint-"))
    procs = Procs(tmp)
    proxies = []
    results: dict[str, dict] = {}
    web, web_port = origin(o.mib * MIB)
    try:
        http, udp, tcp = free_port(), free_port(socket.SOCK_DGRAM), free_port()
        data = tmp / "relay-data"
        secrets = {d: run([relay, "device", "add", d, "--data", data]) for d in ("fp-c", "fp-cs", "fp-swift")}
        tokens = {d: run([relay, "token", d, "--data", data]) for d in secrets}
        procs.start("relay", [relay, "serve", "--data", data, "--http", f"127.0.0.1:{http}", "--udp",
                              f"127.0.0.1:{udp}", "--tcp", f"127.0.0.1:{tcp}", "--log-level", "warning"])
        wait_port(http)

        static = Path(o.static_bin).resolve()
        subjects = [("c", "relay-agent (C)", [agent], "fp-c")]
        if static.exists():
            subjects.append(("c_static", "relay-agent static", [static], "fp-cs"))
        subjects.append(("swift", "relay agent (Swift)", [relay, "agent"], "fp-swift"))
        for key, _, argv, dev in subjects:
            px = UdpProxy(udp)
            px.start()
            proxies.append(px)
            p = procs.start(key, argv + ["--relay", f"127.0.0.1:{px.port}", "--id", dev, "--key", secrets[dev],
                                         "--forward", f"127.0.0.1:{web_port}"])
            wait_for(lambda: "agent.registered" in procs.err(key) or p.poll() is not None, 30, f"{key} registered")
            if p.poll() is not None:
                raise RuntimeError(f"{key} exited: {procs.err(key)[-1000:]}")
            results[key] = measure(p.pid, o.idle, px.count, f"http://127.0.0.1:{http}/d/{dev}/bulk",
                                   f"Authorization: Bearer {tokens[dev]}", o.mib)
            results[key]["exit_on_sigterm"] = procs.stop(p)

        if with_ssh:
            keys = tmp / "ssh"
            keys.mkdir()
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keys / "host"])
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keys / "client"])
            (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
            os.chmod(keys / "authorized_keys", 0o600)
            Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
            sport, rport = free_port(), free_port()
            (keys / "sshd_config").write_text(
                f"Port {sport}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
                f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile none\nUsePAM no\nStrictModes no\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
                "AllowTcpForwarding yes\nGatewayPorts no\nLogLevel ERROR\n")
            procs.start("sshd", [sshd, "-D", "-e", "-f", keys / "sshd_config"])
            wait_port(sport)
            px = TcpProxy(sport)
            px.start()
            proxies.append(px)
            p = procs.start("ssh", [ssh, "-N", "-T", "-p", px.port, "-i", keys / "client",
                                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                    "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                                    "-o", "ServerAliveInterval=25", "-o", "LogLevel=ERROR",
                                    "-R", f"127.0.0.1:{rport}:127.0.0.1:{web_port}", f"{os.environ.get('USER', 'root')}@127.0.0.1"])
            wait_port(rport, 30)
            results["ssh"] = measure(p.pid, o.idle, px.count, f"http://127.0.0.1:{rport}/bulk", None, o.mib)
            results["ssh"]["exit_on_sigterm"] = procs.stop(p)
    except Exception:
        for log in sorted(tmp.glob("*.err")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}", file=sys.stderr)
        raise
    finally:
        procs.stop_all()
        for px in proxies:
            px.close()
        web.shutdown()

    static_size = Path(o.static_bin).stat().st_size if Path(o.static_bin).exists() else None
    sizes = {"c": (agent.stat().st_size, static_size), "swift": (stripped_size(relay, tmp), None)}
    if "c_static" in results:
        sizes["c_static"] = (None, static_size)
    if "ssh" in results:
        sizes["ssh"] = (stripped_size(Path(ssh), tmp), None)
    shutil.rmtree(tmp, ignore_errors=True)
    for k, (dyn, static) in sizes.items():
        results[k]["stripped_bytes"], results[k]["static_stripped_bytes"] = dyn, static

    labels = {"c": "relay-agent (C)", "c_static": "relay-agent static", "swift": "relay agent (Swift)",
              "ssh": "ssh -R (OpenSSH)"}
    cols = [k for k in ("c", "c_static", "swift", "ssh") if k in results]
    kib = lambda n: f"{n / 1024:,.0f} KiB" if n is not None else "-"
    rows = [
        ("stripped binary, dynamic", lambda r: kib(r["stripped_bytes"])),
        ("stripped binary, static", lambda r: kib(r["static_stripped_bytes"])),
        ("shared objects mapped", lambda r: str(r["shared_objects"])),
        ("RSS idle", lambda r: f"{r['idle_rss_kib']:,} KiB"),
        ("private idle", lambda r: f"{r['idle_private_kib']:,} KiB"),
        (f"RSS peak, {o.mib} MiB transfer", lambda r: f"{r['xfer_rss_kib']:,} KiB"),
        (f"private peak, {o.mib} MiB transfer", lambda r: f"{r['xfer_private_kib']:,} KiB"),
        # no tick in the window: below one tick per window, what the resolution allows
        ("CPU idle, per hour", lambda r: (f"{r['idle_cpu_s_per_hour'] * 1000:,.0f} ms" if r["idle_cpu_ticks"] else
                                          f"< {3600 * 1000 / TICK / r['idle_window_s']:,.0f} ms")
                                           + f" ({r['idle_cpu_ticks']} ticks/{r['idle_window_s']:.0f}s)"),
        ("CPU per MiB relayed", lambda r: f"{r['xfer_cpu_ms_per_mib']:.2f} ms"),
        ("idle packets per hour", lambda r: f"{r['msgs_per_hour']:,.0f} ({r['idle_msgs']}/{r['idle_window_s']:.0f}s)"),
        ("idle payload bytes per hour", lambda r: f"{r['bytes_per_hour']:,.0f}"),
        ("exit status on SIGTERM", lambda r: str(r["exit_on_sigterm"])),
    ]
    print(f"Device agent footprint, {platform.node()}, {os.cpu_count()} cores, {platform.machine()}, "
          f"relay defaults (period 300 s, keepalive 25 s), idle window {o.idle:.0f} s, {o.mib} MiB download")
    print(f"  command: python3 bench/agent_footprint.py --relay-bin {relay} --agent-bin {agent} "
          f"--idle {o.idle:g} --mib {o.mib}")
    w = 34
    print(f"  {'':{w}}" + "".join(f"{labels[k]:>24}" for k in cols))
    for name, fmt in rows:
        print(f"  {name:{w}}" + "".join(f"{fmt(results[k]):>24}" for k in cols))
    print("  (packets: UDP datagrams both ways for the agents, TCP reads by the proxy for ssh; bytes: payload,"
          " without IP/UDP/TCP headers; CPU at %d ticks/s)" % TICK)
    if o.json:
        Path(o.json).write_text(json.dumps({"idle_s": o.idle, "mib": o.mib, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
