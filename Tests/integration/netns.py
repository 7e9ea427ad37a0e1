"""A device behind two real Linux NATs, in network namespaces (root only).

    dev 192.168.7.2 --- 192.168.7.1 home 100.64.0.2 --- 100.64.0.1 cgn 198.18.0.2 --- 198.18.0.1 pub
    agent, web server   home router: masquerade        carrier NAT: masquerade    relay, terminal
                        (keeps the source port)        fully-random (new port
                                                       for every new mapping)

Only the test's own namespaces carry traffic; 198.18.0.0/15 and 100.64.0.0/10 are reserved
for exactly this (benchmarking, carrier NAT). Names are rlt-<pid>-<role>, so a crashed run's
leftovers can be recognised (its pid is gone) and removed without touching a live run's.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import threading
import time
from concurrent.futures import Future

PREFIX = "rlt-"
RELAY_IP = "198.18.0.1"
CGN_PUBLIC_IP = "198.18.0.2"
HOME_WAN_IP = "100.64.0.2"
DEV_IP = "192.168.7.2"
NATS = ("home", "cgn")

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def run(args: list, check: bool = True, timeout: float = 10.0, input: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, input=input,
                       stdin=None if input is not None else subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def unavailable() -> str | None:
    """Why namespaces and a NAT cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns, nftables, conntrack)"
    for tool in ("ip", "nft", "conntrack"):
        if not shutil.which(tool):
            return f"`{tool}` not installed (scripts/setup.sh --test installs iproute2, nftables, conntrack)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    p = run(["ip", "netns", "add", probe], check=False)
    if p.returncode != 0:
        return f"cannot create a network namespace: {p.stderr.strip()}"
    try:
        p = run(["ip", "netns", "exec", probe, "nft", "add", "table", "ip", "t"], check=False)
        if p.returncode != 0:
            return f"nftables unusable in a namespace: {p.stderr.strip()}"
        p = run(["ip", "netns", "exec", probe, "sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout"], check=False)
        if p.returncode != 0:
            return f"no per-namespace conntrack sysctls: {p.stderr.strip()}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return None


def kill_ns_pids(ns: str):
    """SIGKILLs whatever still runs in one of our namespaces (all started by this suite)."""
    p = run(["ip", "netns", "pids", ns], check=False)
    for pid in p.stdout.split():
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass


def remove_stale():
    """Deletes rlt-<pid>-* namespaces whose creating process is gone (a crashed earlier run)."""
    for line in run(["ip", "netns", "list"], check=False).stdout.splitlines():
        m = re.match(rf"({PREFIX}(\d+)-\S+)", line)
        if not m or int(m.group(2)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(2)), 0)
            continue  # that run is alive: not ours to touch
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        kill_ns_pids(m.group(1))
        run(["ip", "netns", "del", m.group(1)], check=False)


class Topology:
    def __init__(self, udp_timeout: int, udp_stream_timeout: int):
        tag = f"{PREFIX}{os.getpid()}"
        self.ns = {role: f"{tag}-{role}" for role in ("dev", "home", "cgn", "pub")}
        self.udp_timeout = udp_timeout
        self.udp_stream_timeout = udp_stream_timeout

    def __getitem__(self, role: str) -> str:
        return self.ns[role]

    def ip(self, role: str, *args, check: bool = True) -> subprocess.CompletedProcess:
        return run(["ip", "-n", self.ns[role], *args], check=check)

    def exec(self, role: str, *args, check: bool = True, timeout: float = 10.0, input: str | None = None):
        return run(["ip", "netns", "exec", self.ns[role], *args], check=check, timeout=timeout, input=input)

    def prefix(self, role: str) -> list:
        """argv prefix that runs a command in the namespace (ip execs it: the pid is the command's)."""
        return ["ip", "netns", "exec", self.ns[role]]

    def up(self):
        for ns in self.ns.values():
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        self._link("dev", "eth0", DEV_IP, "home", "lan", "192.168.7.1")
        self._link("home", "wan", HOME_WAN_IP, "cgn", "inside", "100.64.0.1")
        self._link("cgn", "outside", CGN_PUBLIC_IP, "pub", "eth0", RELAY_IP)
        self.ip("dev", "route", "add", "default", "via", "192.168.7.1")
        self.ip("home", "route", "add", "default", "via", "100.64.0.1")
        for role, wan, how in (("home", "wan", ""), ("cgn", "outside", " fully-random")):
            self.exec(role, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            # nat: the masquerade; rlt: rules tests add, at raw priority (-300) so that a dropped
            # datagram never reaches conntrack (a drop in forward would still refresh the mapping)
            self.nft(role, f"""
table ip nat {{
    chain post {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{wan}" masquerade{how}
    }}
}}
table ip rlt {{
    chain pre {{
        type filter hook prerouting priority raw; policy accept;
    }}
}}
""")
        self.set_udp_timeouts(self.udp_timeout, self.udp_stream_timeout)

    def _link(self, a: str, a_if: str, a_ip: str, b: str, b_if: str, b_ip: str):
        run(["ip", "link", "add", a_if, "netns", self.ns[a], "type", "veth", "peer", "name", b_if, "netns", self.ns[b]])
        for role, ifname, addr in ((a, a_if, a_ip), (b, b_if, b_ip)):
            self.ip(role, "addr", "add", f"{addr}/24", "dev", ifname)
            self.ip(role, "link", "set", ifname, "up")

    def down(self):
        for ns in self.ns.values():
            kill_ns_pids(ns)
            run(["ip", "netns", "del", ns], check=False)

    # ---- the NATs

    def nft(self, role: str, script: str):
        self.exec(role, "nft", "-f", "-", input=script)

    def set_udp_timeouts(self, unreplied: int, stream: int):
        """Both NATs: nf_conntrack_udp_timeout (no reply seen yet, or younger than 2 s) and
        nf_conntrack_udp_timeout_stream (two-way and seen again after 2 s). A changed value
        applies to an existing mapping at its next packet."""
        for role in NATS:
            self.exec(role, "sysctl", "-qw", f"net.netfilter.nf_conntrack_udp_timeout={unreplied}",
                      f"net.netfilter.nf_conntrack_udp_timeout_stream={stream}")

    def conntrack_list(self, role: str) -> str:
        return self.exec(role, "conntrack", "-L", "-p", "udp", check=False).stdout

    def mappings(self, role: str, relay_port: int) -> list:
        """Live UDP conntrack entries of the NAT towards the relay's port: [{sport, reply_dport (the
        NAT's public port), assured, timeout}]. The listing skips expired entries; 0 is < 1 s left."""
        out = []
        for line in self.conntrack_list(role).splitlines():
            ports = re.findall(r"dport=(\d+)", line)
            if not ports or int(ports[0]) != relay_port:
                continue
            out.append({"sport": int(re.search(r"sport=(\d+)", line).group(1)),
                        "reply_dport": int(ports[-1]), "assured": "[ASSURED]" in line,
                        "timeout": int(line.split()[2])})
        return out

    def flush_udp(self, *roles: str):
        """Forgets every UDP mapping, as a NAT reboot would."""
        for role in roles or NATS:
            self.exec(role, "conntrack", "-D", "-p", "udp", check=False)

    def add_drop(self, role: str, match: str):
        """A counting drop rule in the NAT's raw prerouting chain."""
        self.nft(role, f"add rule ip rlt pre {match} counter drop")

    def drop_count(self, role: str) -> int:
        rs = json.loads(self.exec(role, "nft", "-j", "list", "chain", "ip", "rlt", "pre").stdout)
        n = 0
        for item in rs.get("nftables", []):
            for e in item.get("rule", {}).get("expr", []):
                if "counter" in e:
                    n += e["counter"]["packets"]
        return n

    def clear_drops(self, role: str):
        self.exec(role, "nft", "flush", "chain", "ip", "rlt", "pre")


def ns_call(ns: str, fn, *args, timeout: float = 60.0, **kw):
    """Runs fn in a new thread that has entered `ns`'s network namespace and returns its result.
    Sockets keep the namespace they were made in, so whatever fn creates works from any thread."""
    fut: Future = Future()

    def body():
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            fut.set_result(fn(*args, **kw))
        except BaseException as e:  # noqa: BLE001
            fut.set_exception(e)

    threading.Thread(target=body, daemon=True).start()
    return fut.result(timeout)
