"""A three-node relay site in network namespaces (root only) (docs/ARCHITECTURE.md, "Cluster").

    ns dev (agents, simulated devices) -- ns nat (masquerade, 198.18.0.1) --+
                                                                          |  ns sw: bridge "pub" 198.18.0.0/24
    ns term (terminals, prober, 198.18.0.200) ----------------------------+-- ns r1 eth0 .21  (VIP1 .101)
                                                                          +-- ns r2 eth0 .22  (VIP2 .102)
                                                                          +-- ns r3 eth0 .23  (VIP3 .103)
                                                 bridge "priv" 10.99.0.0/24: r1..r3 eth1 .21-.23,
                                                 mesh VIPs .101-.103, ns db (PostgreSQL) .50

Each node runs `relay serve` (every VIP and mesh VIP floating, PostgreSQL store, the cluster
flags) and keepalived with the configuration packaging/keepalived/gen-keepalived.sh makes, so
the packaged configuration is the one under test. Names are rlt-<pid>-<role> like
Tests/integration/netns.py, so a crashed run's namespaces are recognised and removed.
Every process is started in its own process group and stopped by the group; every wait is
bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "integration"))

from netns import PREFIX, _CLONE_NEWNET, _libc, kill_ns_pids, remove_stale, run  # noqa: E402
from pgserver import PgError, PgServer, missing as pg_missing  # noqa: E402

N = 3
NODE_PUB = [f"198.18.0.{20 + k}" for k in range(1, N + 1)]
NODE_PRIV = [f"10.99.0.{20 + k}" for k in range(1, N + 1)]
VIPS = [f"198.18.0.{100 + k}" for k in range(1, N + 1)]
MVIPS = [f"10.99.0.{100 + k}" for k in range(1, N + 1)]
NAT_PUB = "198.18.0.1"
NAT_LAN = "192.168.50.1"
DEV_IP = "192.168.50.2"
TERM_IP = "198.18.0.200"
DB_IP = "10.99.0.50"
UDP_PORT, TCP_PORT, HTTP_PORT, METRICS_PORT, MESH_PORT = 4700, 4701, 8080, 9100, 4710
THREADS = 2
KEEPALIVE, PERIOD = 5, 20
ADVERT = "0.2"
GEN = ROOT / "packaging" / "keepalived" / "gen-keepalived.sh"
MESH_FLAGS = ("--node", "--mesh", "--mesh-peer", "--mesh-key-file", "--callback-host")


def relay_bin() -> Path:
    if os.environ.get("RELAY_BIN"):
        return Path(os.environ["RELAY_BIN"])
    return ROOT / ".build" / "debug" / "relay"


def agent_bin() -> list:
    """The C agent when built (make agent), else `relay agent`."""
    c = Path(os.environ.get("RELAY_AGENT_BIN", ROOT / ".build-agent" / "relay-agent"))
    return [str(c)] if c.exists() else [str(relay_bin()), "agent"]


def unavailable() -> Optional[str]:
    """Why the site cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables, keepalived)"
    for tool in ("ip", "nft", "keepalived", "curl"):
        if not shutil.which(tool):
            return f"`{tool}` not installed (bash scripts/setup.sh --test installs iproute2, nftables, keepalived, curl)"
    why = pg_missing()
    if why:
        return why
    if not relay_bin().exists():
        return f"no relay binary at {relay_bin()} (swift build)"
    p = run(["ip", "netns", "add", f"{PREFIX}{os.getpid()}-probe"], check=False)
    if p.returncode != 0:
        return f"cannot create a network namespace: {p.stderr.strip()}"
    run(["ip", "netns", "del", f"{PREFIX}{os.getpid()}-probe"], check=False)
    return None


def has_mesh() -> bool:
    """Whether this relay build has the cluster flags (the mesh)."""
    out = subprocess.run([str(relay_bin()), "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    return all(f in out for f in MESH_FLAGS)


def enter_ns(ns: str):
    """Moves the calling thread into `ns` (sockets it makes later stay there)."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(f"setns {ns} failed")
    finally:
        os.close(fd)


def http_get(host: str, port: int, path: str, headers: Optional[dict] = None, timeout: float = 5.0) -> tuple:
    """(status, body) of one GET on a fresh connection (Connection: close); call it from a
    thread inside the namespace to send from."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Connection": "close", **(headers or {})})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def parse_metrics(text: str) -> dict:
    """{'name{labels}': value} plus {'name': sum over its samples}."""
    out: dict = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            continue
        try:
            v = float(m.group(3))
        except ValueError:
            continue
        name, labels = m.group(1), m.group(2) or ""
        out[name + labels] = v
        if labels:
            out[name] = out.get(name, 0.0) + v
        else:
            out.setdefault(name, v)
    return out


class Proc:
    """A process in a namespace, in its own process group, its output in a log file."""

    def __init__(self, ns: str, argv: list, log: Path, env: Optional[dict] = None):
        self.argv = [str(a) for a in argv]
        self.log = log
        self._f = open(log, "ab")
        self.p = subprocess.Popen(["ip", "netns", "exec", ns] + self.argv, stdout=self._f, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True, env=env)

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_text(self, pattern: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if re.search(pattern, self.text()):
                return True
            if not self.alive():
                return bool(re.search(pattern, self.text()))
            time.sleep(0.05)
        return False

    def signal(self, sig):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.p.pid, sig)

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.p.returncode

    def kill(self):
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(5)
        with contextlib.suppress(Exception):
            self._f.close()

    def cpu_seconds(self) -> float:
        """utime + stime of the process (the relay itself: `ip netns exec` execs it)."""
        try:
            fields = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class NsPgServer(PgServer):
    """pgserver.PgServer listening on an address inside a namespace (initdb and postgres run
    there as the postgres user; the superuser's unix socket works from anywhere)."""

    def __init__(self, ns: str, host: str, base: Path):
        super().__init__(port=5432, base=base)
        self.ns = ns
        self.host = host

    def _as_pg(self, argv: list) -> list:
        return ["ip", "netns", "exec", self.ns] + super()._as_pg(argv)

    def _init(self):
        super()._init()
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write(f"listen_addresses = '{self.host}'\n")  # the last setting wins
        with open(self.datadir / "pg_hba.conf", "a") as f:
            f.write("host all all 10.99.0.0/24 scram-sha-256\n")

    def _connect_tcp(self):
        # from inside the namespace, where the server listens
        with ThreadPoolExecutor(1, initializer=enter_ns, initargs=(self.ns,)) as pool:
            pool.submit(super()._connect_tcp).result(5)

    def _wait_port_free(self, timeout: float):
        pass  # the namespace goes with the site


class Site:
    def __init__(self, workdir: Path, mesh: bool = True):
        self.tag = f"{PREFIX}{os.getpid()}"
        self.roles = ["sw", "r1", "r2", "r3", "nat", "dev", "term", "db"]
        self.ns = {r: f"{self.tag}-{r}" for r in self.roles}
        self.dir = workdir
        self.mesh = mesh
        self.pg: Optional[NsPgServer] = None
        self.relays: dict = {}  # node k -> Proc
        self.keepalived: dict = {}  # node k -> Proc
        self.procs: list = []  # everything else (agents, web servers, simulated devices)
        self.pools: dict = {}
        self.keyfile = workdir / "mesh.key"
        self.cli_data = workdir / "cli-data"
        self.store_url = ""

    # ------------------------------------------------------------ namespaces

    def ip(self, role: str, *args, check: bool = True):
        return run(["ip", "-n", self.ns[role], *args], check=check)

    def exec(self, role: str, *args, check: bool = True, timeout: float = 30.0, input: str | None = None,
             env: Optional[dict] = None):
        argv = ["ip", "netns", "exec", self.ns[role], *[str(a) for a in args]]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, env=env,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def pool(self, role: str, workers: int = 8) -> ThreadPoolExecutor:
        """Threads living in `role`'s namespace (one pool per role and size)."""
        key = (role, workers)
        if key not in self.pools:
            self.pools[key] = ThreadPoolExecutor(workers, initializer=enter_ns, initargs=(self.ns[role],),
                                                 thread_name_prefix=f"ns-{role}")
        return self.pools[key]

    def call(self, role: str, fn, *args, timeout: float = 60.0, **kw):
        return self.pool(role).submit(fn, *args, **kw).result(timeout)

    def _veth(self, role: str, ifname: str, addr: str, sw_if: str, bridge: str):
        run(["ip", "link", "add", ifname, "netns", self.ns[role], "type", "veth", "peer", "name", sw_if,
             "netns", self.ns["sw"]])
        self.ip(role, "addr", "add", addr, "dev", ifname)
        self.ip(role, "link", "set", ifname, "up")
        self.ip("sw", "link", "set", sw_if, "master", bridge)
        self.ip("sw", "link", "set", sw_if, "up")

    def up(self):
        remove_stale()
        for ns in self.ns.values():
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        for br in ("pub", "priv"):
            self.ip("sw", "link", "add", br, "type", "bridge")
            self.ip("sw", "link", "set", br, "up")
        for k in range(1, N + 1):
            self._veth(f"r{k}", "eth0", f"{NODE_PUB[k - 1]}/24", f"p-r{k}", "pub")
            self._veth(f"r{k}", "eth1", f"{NODE_PRIV[k - 1]}/24", f"q-r{k}", "priv")
        self._veth("term", "eth0", f"{TERM_IP}/24", "p-term", "pub")
        self._veth("nat", "eth0", f"{NAT_PUB}/24", "p-nat", "pub")
        self._veth("db", "eth0", f"{DB_IP}/24", "q-db", "priv")
        run(["ip", "link", "add", "lan", "netns", self.ns["nat"], "type", "veth", "peer", "name", "eth0",
             "netns", self.ns["dev"]])
        self.ip("nat", "addr", "add", f"{NAT_LAN}/24", "dev", "lan")
        self.ip("nat", "link", "set", "lan", "up")
        self.ip("dev", "addr", "add", f"{DEV_IP}/24", "dev", "eth0")
        self.ip("dev", "link", "set", "eth0", "up")
        self.ip("dev", "route", "add", "default", "via", NAT_LAN)
        self.exec("nat", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.exec("nat", "nft", "-f", "-", input="""
table ip nat {
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" masquerade
    }
}
""")

    def down(self):
        for pool in self.pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        for p in list(self.procs) + list(self.relays.values()) + list(self.keepalived.values()):
            with contextlib.suppress(Exception):
                p.kill()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.close()
        for ns in self.ns.values():
            kill_ns_pids(ns)
        time.sleep(0.2)
        for ns in self.ns.values():
            run(["ip", "netns", "del", ns], check=False)

    # ------------------------------------------------------------ PostgreSQL

    def start_db(self):
        base = self.dir / "pg"
        base.mkdir()
        self.pg = NsPgServer(self.ns["db"], DB_IP, base)
        self.pg.start(timeout=60)
        self.store_url = f"postgres://{self.pg.user}:{self.pg.password}@{DB_IP}:5432/{self.pg.dbname}"
        self.cli_data.mkdir(exist_ok=True)

    def cli(self, *args, node: int = 1, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """`relay ARGS --store <PostgreSQL> --data ...` run on node `node`."""
        return self.exec(f"r{node}", relay_bin(), *args, "--store", self.store_url, "--data", self.cli_data,
                         check=False, timeout=timeout)

    def device_add(self, device_id: str, node: int = 1) -> str:
        r = self.cli("device", "add", device_id, node=node)
        if r.returncode != 0 or not re.fullmatch(r"[0-9a-f]{64}", r.stdout.strip()):
            raise AssertionError(f"device add {device_id}: {r.returncode} {r.stdout!r} {r.stderr!r}")
        return r.stdout.strip()

    def token(self, device_id: str, node: int = 1) -> str:
        r = self.cli("token", device_id, node=node)
        if r.returncode != 0 or not r.stdout.strip():
            raise AssertionError(f"token {device_id}: {r.returncode} {r.stderr!r}")
        return r.stdout.strip()

    # ------------------------------------------------------------ relays

    def relay_args(self, k: int) -> list:
        data = self.dir / f"r{k}-data"
        data.mkdir(exist_ok=True)
        a = ["serve", "--store", self.store_url, "--data", data,
             "--tcp", f"0.0.0.0:{TCP_PORT}", "--http", f"0.0.0.0:{HTTP_PORT}", "--metrics", f"0.0.0.0:{METRICS_PORT}",
             "--admin", "off", "--threads", THREADS, "--keepalive", KEEPALIVE, "--period", PERIOD,
             "--wakes-per-device-minute", 0, "--conn-rate-per-source", 0, "--wake-timeout", "5s", "--drain-timeout", "2s"]
        for v in VIPS:
            a += ["--udp", f"{v}:{UDP_PORT}"]
        for v in VIPS + MVIPS:
            a += ["--floating", v]
        if self.mesh:
            a += ["--node", k, "--mesh", f"{NODE_PRIV[k - 1]}:{MESH_PORT}"]
            for m in MVIPS:
                a += ["--mesh", f"{m}:{MESH_PORT}"]
            for m in MVIPS:
                a += ["--mesh-peer", f"{m}:{MESH_PORT}"]
            a += ["--mesh-key-file", self.keyfile, "--callback-host", NODE_PUB[k - 1]]
        return [relay_bin()] + a

    def start_relay(self, k: int, timeout: float = 60.0):
        if self.mesh and not self.keyfile.exists():
            # what the README says: head -c 32 /dev/urandom | xxd -p -c 64
            self.keyfile.write_text(secrets.token_hex(32) + "\n")
            os.chmod(self.keyfile, 0o600)
        p = Proc(self.ns[f"r{k}"], self.relay_args(k), self.dir / f"r{k}-relay.log")
        self.relays[k] = p
        if not p.wait_text(r"relay\.ready", timeout):
            raise AssertionError(f"relay r{k} not ready within {timeout}s:\n{p.text()[-4000:]}")
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                if self.call(f"r{k}", http_get, "127.0.0.1", HTTP_PORT, "/readyz", timeout=1)[0] == 200:
                    return p
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"relay r{k}: /readyz not 200:\n{p.text()[-3000:]}")

    def metrics(self, k: int) -> dict:
        st, body = self.call("term", http_get, NODE_PUB[k - 1], METRICS_PORT, "/metrics", timeout=5)
        if st != 200:
            raise AssertionError(f"r{k} /metrics: {st}")
        return parse_metrics(body.decode())

    def metrics_text(self, k: int) -> str:
        return self.call("term", http_get, NODE_PUB[k - 1], METRICS_PORT, "/metrics", timeout=5)[1].decode()

    # ------------------------------------------------------------ keepalived

    def keepalived_conf(self, k: int) -> Path:
        d = self.dir / f"ka{k}"
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o755)
        env = dict(os.environ, VIPS=" ".join(VIPS), MVIPS=" ".join(MVIPS), PUB_IF="eth0", PRIV_IF="eth1",
                   READYZ=f"http://127.0.0.1:{HTTP_PORT}/readyz", ADVERT=ADVERT, VRID_BASE="10", RELEASE_DIR=str(d))
        out = subprocess.run(["bash", str(GEN), str(k)], capture_output=True, text=True, env=env, timeout=10)
        if out.returncode != 0:
            raise AssertionError(f"gen-keepalived.sh {k}: {out.stderr}")
        conf = d / "keepalived.conf"
        conf.write_text(out.stdout)
        return conf

    def start_keepalived(self, k: int, conf: Optional[Path] = None):
        conf = conf or self.keepalived_conf(k)
        d = conf.parent
        argv = ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
                "-f", conf, "-p", d / "keepalived.pid", "-r", d / "vrrp.pid"]
        p = Proc(self.ns[f"r{k}"], argv, d / "keepalived.log")
        self.keepalived[k] = p
        return p

    def release(self, k: int, vip: int, value: int):
        """The operator's deliberate move: 1 in release-VIPn on node k hands VIPn to its backup."""
        (self.dir / f"ka{k}" / f"release-VIP{vip}").write_text(f"{value}\n")

    def place_vips(self) -> dict:
        """Waits until every VIP has one holder and puts any on the wrong node onto its master,
        as an operator would (packaging/keepalived/README.md): with nopreempt, the node whose
        keepalived timed out first at start keeps a VIP, and a backup that started well before
        the master holds the master's VIP. Returns the holders."""
        want = {v: v for v in range(1, N + 1)}
        end = time.monotonic() + 15
        h = self.holders()
        while time.monotonic() < end:
            h = self.holders()
            if all(len(ks) == 1 and isinstance(ks[0], int) for ks in h.values()):
                break
            time.sleep(0.05)
        self.vips_moved = []
        for v, ks in h.items():
            if len(ks) == 1 and isinstance(ks[0], int) and ks[0] != v:
                self.release(ks[0], v, 1)
                self.wait_holders({v: v}, 5)
                self.release(ks[0], v, 0)
                self.vips_moved.append(f"VIP{v}: r{ks[0]} -> r{v}")
        return self.wait_holders(want, 10)

    def holders(self) -> dict:
        """VIP index (1..N) -> the nodes holding it now (its address on their eth0)."""
        out = {v: [] for v in range(1, N + 1)}
        for k in range(1, N + 1):
            p = self.ip(f"r{k}", "-4", "-o", "addr", "show", "dev", "eth0", "up", check=False)  # a dead node keeps its addresses
            q = self.ip(f"r{k}", "-4", "-o", "addr", "show", "dev", "eth1", "up", check=False)
            for v in range(1, N + 1):
                if f" {VIPS[v - 1]}/" in p.stdout:
                    out[v].append(k)
                    if f" {MVIPS[v - 1]}/" not in q.stdout:
                        out[v].append(f"r{k} lacks mVIP{v}")
        return out

    def wait_holders(self, want: dict, timeout: float) -> dict:
        end = time.monotonic() + timeout
        h = self.holders()
        while time.monotonic() < end:
            h = self.holders()
            if all(h[v] == [k] for v, k in want.items()):
                return h
            time.sleep(0.05)
        return h

    # ------------------------------------------------------------ devices

    def start_agent(self, device_id: str, secret: str, vip: int, forward_port: int) -> Proc:
        kf = self.dir / f"agent-{device_id}.key"
        kf.write_text(secret + "\n")
        os.chmod(kf, 0o600)
        argv = agent_bin() + ["--relay", f"{VIPS[vip - 1]}:{UDP_PORT}", "--id", device_id, "--key-file", kf,
                              "--forward", f"127.0.0.1:{forward_port}"]
        p = Proc(self.ns["dev"], argv, self.dir / f"agent-{device_id}.log")
        self.procs.append(p)
        return p

    def start_pages(self, ports: dict) -> Proc:
        argv = [sys.executable, HERE / "webpages.py"] + [f"{port}={i}" for i, port in ports.items()]
        p = Proc(self.ns["dev"], argv, self.dir / "webpages.log")
        self.procs.append(p)
        if not p.wait_text(r"serving \d+", 20):
            raise AssertionError(f"web servers did not start:\n{p.text()}")
        return p

    def start_sims(self, devices: list, timeout: float = 30.0) -> Proc:
        spec = self.dir / "simdev.json"
        spec.write_text(json.dumps({"devices": devices}))
        self.sim_stats = self.dir / "simdev-stats.json"
        p = Proc(self.ns["dev"], [sys.executable, HERE / "simdev.py", spec, self.sim_stats], self.dir / "simdev.log")
        self.procs.append(p)
        self.sims = p
        if not p.wait_text(r"registered \d+", timeout):
            raise AssertionError(f"simulated devices did not all register within {timeout}s:\n{p.text()[-3000:]}")
        return p

    # ------------------------------------------------------------ failures

    def kill_node(self, k: int):
        """Node death: SIGKILL its relay and keepalived, then its links go down."""
        for p in (self.relays.get(k), self.keepalived.get(k)):
            if p is not None:
                p.signal(signal.SIGKILL)
        for ifname in ("eth0", "eth1"):
            self.ip(f"r{k}", "link", "set", ifname, "down", check=False)
        for p in (self.relays.get(k), self.keepalived.get(k)):
            if p is not None:
                p.kill()
        kill_ns_pids(self.ns[f"r{k}"])  # keepalived's VRRP child and scripts

    def revive_node(self, k: int):
        for ifname in ("eth0", "eth1"):
            self.ip(f"r{k}", "link", "set", ifname, "up")
        # the addresses keepalived had put there stay after a SIGKILL: a real reboot clears them
        for v in range(1, N + 1):
            self.ip(f"r{k}", "addr", "del", f"{VIPS[v - 1]}/32", "dev", "eth0", check=False)
            self.ip(f"r{k}", "addr", "del", f"{MVIPS[v - 1]}/32", "dev", "eth1", check=False)
