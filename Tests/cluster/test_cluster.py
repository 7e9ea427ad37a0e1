"""A three-node relay site on one machine: real
keepalived moving floating addresses, a real PostgreSQL store, a real nftables NAT in front of
real agents and simulated devices, terminals in their own namespace (clustersite.py).

Checks, in file order (the module's site is shared; the failure tests come last):
  a. a wake through any node reaches any device (every node x every VIP's devices);
  b. a cross-node wake carries no session byte through the holder (metrics of the holder, the
     terminal's node and the third node before and after);
  c. a device added with the CLI against PostgreSQL is known to every node at once
     (propagation from the CLI's exit, p50/p99/max) and is woken through every node;
  c2. PostgreSQL stops: no VIP moves (/readyz stays 200), wakes go on, relay_store_up drops to
     0; once it is back a new device reaches every node;
  e. wakes/s and relay CPU per wake through 1, 2 and 3 nodes;
  d. failover: node r1 dies (SIGKILL of its relay and keepalived, links down): VIP2/VIP3
     devices keep answering, VIP1 moves to its backup (gap seen by a 20 ms prober), each VIP1
     device answers again within gap + one keepalive + 1 s; then r1 returns and keeps nothing
     (nopreempt), and the operator's deliberate move (release-VIP1) gives VIP1 back;
  f. drain: SIGTERM to r3's relay moves its VIP to the backup, its return moves nothing;
  g. a node that gave a VIP away (alive) answers `unknown` for that VIP's devices, so a wake
     right after a planned move gets a fast 503, not the wake timeout (the old holder cannot
     send from an address it no longer holds: sendto fails with ENETUNREACH).
Every figure is printed and collected into <tmp>/relay-cluster-*-figures.json (`pytest -s`
shows them). Run: make test-cluster (root).
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import clustersite as cs

AGENTS_PER_VIP = 2
SIMS_PER_VIP = 30
SAMPLE_SIMS = 3  # simulated devices per VIP that check a. wakes through every node
WAKES_PER_PAIR = 5  # check b.
CHANGES = 20  # check c.
PROPAGATION_BOUND = 2.0  # s; LISTEN/NOTIFY makes it milliseconds
THROUGHPUT_WAKES = 3000  # per node count, check e. (CPU time comes in 10 ms ticks: enough wakes to count)
THROUGHPUT_CONCURRENCY = 12
PROBE_EVERY = 0.02  # the VIP1 gap prober


def pctl(xs: list, q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def assert_readable(statuses) -> None:
    """Every answer the relay gave while a device was unreachable says, in words, which device
    and why (a wake that ends as the device registers at this very node once answered 503
    with an uninitialised body)."""
    for answer in statuses:
        if answer[:1].isdigit():  # "STATUS body" (the device's name replaced by ID)
            assert answer.isprintable() and "ID" in answer, f"unreadable relay answer {answer!r}"


def ms(x: float) -> float:
    return round(x * 1000, 1)


def deltas(before: dict, after: dict, *prefixes: str) -> dict:
    """The series of these metric families that changed between two scrapes (labelled ones
    by their labels; a family with labels also appears as its sum, which is left out)."""
    out = {}
    labelled = {n.split("{", 1)[0] for n in after if "{" in n}
    for name, v in after.items():
        if name in labelled:
            continue
        if name.startswith(prefixes) and v != before.get(name, 0):
            out[name] = v - before.get(name, 0)
    return out


MESH_FAMILIES = ("relay_mesh_answers_total", "relay_mesh_wakes_handled_total", "relay_mesh_connect_to_sent_total",
                 "relay_wakes_total", "relay_cross_node_wakes_total", "relay_mesh_dropped_total")


class Ctx:
    def __init__(self, site: cs.Site, mesh: bool):
        self.site = site
        self.mesh = mesh
        self.vip_of: dict = {}  # device ID -> VIP index
        self.agents: list = []
        self.sims: list = []
        self.tokens: dict = {}
        self.holder = {v: v for v in range(1, cs.N + 1)}  # VIP -> node
        self.fakes: list = []  # relayproto.FakeDevice of check c.

    def expect(self, device_id: str, path: str) -> bytes:
        if device_id in self.agents:
            return f"page of {device_id} {path}\n".encode()
        return f"sim {device_id} {path}\n".encode()

    def get(self, host: str, device_id: str, path: str = "/", timeout: float = 8.0) -> tuple:
        """(status, body, seconds) of GET /d/ID/path at host:8080, sent from the terminal ns."""
        def one():
            t0 = time.monotonic()
            try:
                st, body = cs.http_get(host, cs.HTTP_PORT, f"/d/{device_id}{path}",
                                       {"Authorization": f"Bearer {self.tokens[device_id]}"}, timeout=timeout)
            except OSError as e:
                st, body = 0, repr(e).encode()
            return st, body, time.monotonic() - t0
        return one

    def node_host(self, k: int) -> str:
        return cs.NODE_PUB[k - 1]


@pytest.fixture(scope="module")
def ctx(cluster_dir, figures):
    why = cs.unavailable()
    if why:
        pytest.skip(f"cluster test: {why}")
    mesh = cs.has_mesh()
    site = cs.Site(cluster_dir, mesh=mesh)
    c = Ctx(site, mesh)
    figures["mesh"] = mesh
    try:
        t0 = time.monotonic()
        site.up()
        site.start_db()
        figures["setup_db_s"] = round(time.monotonic() - t0, 2)
        for k in range(1, cs.N + 1):
            site.start_relay(k)
        confs = {k: site.keepalived_conf(k) for k in range(1, cs.N + 1)}
        for k in range(1, cs.N + 1):  # back to back: the masters' shorter timers win the first election
            site.start_keepalived(k, confs[k])
        h = site.place_vips()
        figures["setup_vips_moved_to_master"] = site.vips_moved
        assert all(h[v] == [v] for v in h), f"VIP holders after start: {h}\n" + "\n".join(
            site.keepalived[k].text()[-1500:] for k in site.keepalived)
        figures["setup_site_s"] = round(time.monotonic() - t0, 2)

        # devices, provisioned against PostgreSQL from node 1 (the CLI in its namespace)
        ids = []
        for v in range(1, cs.N + 1):
            for i in range(1, AGENTS_PER_VIP + 1):
                c.agents.append(f"ag-v{v}-{i}")
                c.vip_of[f"ag-v{v}-{i}"] = v
            for i in range(1, SIMS_PER_VIP + 1):
                c.sims.append(f"sim-v{v}-{i:02d}")
                c.vip_of[f"sim-v{v}-{i:02d}"] = v
        ids = c.agents + c.sims
        t1 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            secrets_ = dict(zip(ids, pool.map(lambda d: site.device_add(d, node=1 + hash(d) % cs.N), ids)))
            need_tok = c.agents + [d for d in c.sims if c.vip_of[d] == 1 or int(d[-2:]) <= SAMPLE_SIMS]
            c.tokens = dict(zip(need_tok, pool.map(site.token, need_tok)))
        figures["setup_provisioning_s"] = round(time.monotonic() - t1, 2)
        ports = {d: 18000 + i for i, d in enumerate(c.agents)}
        site.start_pages(ports)
        for d in c.agents:
            site.start_agent(d, secrets_[d], c.vip_of[d], ports[d])
        site.start_sims([{"id": d, "secret": secrets_[d], "relay": [cs.VIPS[c.vip_of[d] - 1], cs.UDP_PORT]}
                         for d in c.sims])
        # every device alive at the holder of its VIP
        end = time.monotonic() + 30
        alive = {}
        while time.monotonic() < end:
            alive = {k: site.metrics(k).get("relay_devices_alive", 0) for k in range(1, cs.N + 1)}
            per_vip = len(ids) // cs.N
            if all(alive[k] >= per_vip for k in alive):
                break
            time.sleep(0.2)
        assert all(alive[k] >= len(ids) // cs.N for k in alive), f"devices alive per node: {alive}"
        figures["setup_total_s"] = round(time.monotonic() - t0, 2)
        print(f"\nsite up in {figures['setup_total_s']} s (mesh: {mesh}); devices alive per node {alive}")
        yield c
    finally:
        for f in c.fakes:
            f.close()
        if getattr(site, "sims", None) is not None:
            site.sims.stop(5)
            try:
                import json
                stats = json.loads(site.sim_stats.read_text())
                tot: dict = {}
                for st in stats.values():
                    for k, v in st.items():
                        tot[k] = tot.get(k, 0) + v
                figures["simulated_devices_totals"] = tot
            except (OSError, ValueError):
                pass
        site.down()


def need_mesh(c: Ctx, what: str):
    if not c.mesh:
        pytest.skip(f"{what} needs the cluster mesh (relay serve --mesh-peer ...): merge main once it has it")


# ---------------------------------------------------------------- packaging


def test_packaged_node_configs_are_the_generators_output():
    """packaging/keepalived/node{1,2,3}.conf are what gen-keepalived.sh prints with its defaults
    (the site below runs the generator with its own addresses), and the generator refuses
    what would make a broken site."""
    import os
    import subprocess
    d = cs.GEN.parent
    env = {k: v for k, v in os.environ.items() if k not in ("VIPS", "MVIPS", "MASTERS", "BACKUPS", "PUB_IF", "PRIV_IF",
                                                           "READYZ", "VRID_BASE", "ADVERT", "RELEASE_DIR")}
    for k in (1, 2, 3):
        out = subprocess.run(["bash", str(cs.GEN), str(k)], capture_output=True, text=True, env=env, timeout=10)
        assert out.returncode == 0, out.stderr
        assert out.stdout == (d / f"node{k}.conf").read_text(), f"node{k}.conf is stale: rerun gen-keepalived.sh {k}"
        assert out.stdout.count("vrrp_instance VIP") == 2 and "priority 150" in out.stdout and "nopreempt" in out.stdout
    for bad_env, arg in (({"MASTERS": "1 1"}, "1"), ({"MASTERS": "1 2 3", "BACKUPS": "1 3 1"}, "1"), ({}, "4"), ({}, "x"),
                         ({"MVIPS": "10.0.1.11"}, "1")):
        out = subprocess.run(["bash", str(cs.GEN), arg], capture_output=True, text=True, env={**env, **bad_env}, timeout=10)
        assert out.returncode == 2 and out.stdout == "" and "gen-keepalived.sh:" in out.stderr, (bad_env, arg, out)


# ---------------------------------------------------------------- a.


def test_a_wake_through_any_node_reaches_any_device(ctx, figures):
    c = ctx
    targets = c.agents + [d for d in c.sims if int(d[-2:]) <= SAMPLE_SIMS]
    nodes = list(range(1, cs.N + 1))
    jobs = []
    for k in nodes:
        for d in targets:
            if not c.mesh and c.holder[c.vip_of[d]] != k:
                continue
            jobs.append((k, d, f"/a/r{k}"))
    pool = c.site.pool("term", 12)
    futs = [(k, d, p, pool.submit(c.get(c.node_host(k), d, p))) for k, d, p in jobs]
    bad, local, cross = [], [], []
    for k, d, p, f in futs:
        st, body, dt = f.result(30)
        if st != 200 or body != c.expect(d, p):
            bad.append((f"r{k}", d, st, body[:200]))
        (local if c.holder[c.vip_of[d]] == k else cross).append(dt)
    figures["a_requests"] = len(jobs)
    figures["a_wake_local_p50_ms"] = ms(statistics.median(local))
    if cross:
        figures["a_wake_cross_node_p50_ms"] = ms(statistics.median(cross))
        figures["a_wake_cross_node_max_ms"] = ms(max(cross))
    print(f"\na. {len(jobs)} wakes through every node: local p50 {ms(statistics.median(local))} ms"
          + (f", cross-node p50 {ms(statistics.median(cross))} ms max {ms(max(cross))} ms" if cross else ""))
    assert not bad, f"{len(bad)} of {len(jobs)} wakes failed: {bad[:10]}"
    need_mesh(c, "a wake through a node that does not hold the device's VIP")


# ---------------------------------------------------------------- b.


def test_b_cross_node_wakes_carry_no_bytes_through_the_holder(ctx, figures):
    c = ctx
    need_mesh(c, "a cross-node wake")
    s = c.site
    pool = s.pool("term", 12)
    rows = {}
    for v in range(1, cs.N + 1):
        holder = c.holder[v]
        term = holder % cs.N + 1
        third = [k for k in range(1, cs.N + 1) if k not in (holder, term)][0]
        dev = f"ag-v{v}-1"
        before = {k: s.metrics(k) for k in range(1, cs.N + 1)}
        res = [pool.submit(c.get(c.node_host(term), dev, f"/b/{i}")).result(30) for i in range(WAKES_PER_PAIR)]
        assert all(r[0] == 200 and r[1] == c.expect(dev, f"/b/{i}") for i, r in enumerate(res)), res
        time.sleep(0.2)  # the last session's byte counters are final once it ended
        after = {k: s.metrics(k) for k in range(1, cs.N + 1)}

        def d(k, name):
            return after[k].get(name, 0) - before[k].get(name, 0)

        to_dev, to_term = 'relay_relayed_bytes_total{direction="to_device"}', 'relay_relayed_bytes_total{direction="to_terminal"}'
        bound = 'relay_wakes_total{outcome="bound"}'
        row = {
            "holder": f"r{holder}", "terminal_node": f"r{term}",
            "holder_callbacks_bound": d(holder, bound), "holder_bytes_to_device": d(holder, to_dev),
            "holder_bytes_to_terminal": d(holder, to_term),
            "holder_wakes_handled_sent": d(holder, 'relay_mesh_wakes_handled_total{status="sent"}'),
            "holder_connect_to_sent": d(holder, "relay_mesh_connect_to_sent_total"),
            "holder_sessions_active_change": d(holder, "relay_sessions_active"),
            "terminal_callbacks_bound": d(term, bound), "terminal_cross_node_wakes": d(term, "relay_cross_node_wakes_total"),
            "terminal_bytes_to_device": d(term, to_dev), "terminal_bytes_to_terminal": d(term, to_term),
            "terminal_connection_requests_sent": d(term, "relay_connection_requests_sent_total"),
            "third_callbacks_bound": d(third, bound), "third_bytes": d(third, to_dev) + d(third, to_term),
        }
        rows[f"VIP{v}"] = row
        print(f"\nb. VIP{v}: {row}")
        assert row["holder_callbacks_bound"] == 0 and row["holder_bytes_to_device"] == 0 \
            and row["holder_bytes_to_terminal"] == 0 and row["holder_sessions_active_change"] == 0, row
        assert row["holder_wakes_handled_sent"] >= WAKES_PER_PAIR and row["holder_connect_to_sent"] >= WAKES_PER_PAIR, row
        assert row["terminal_cross_node_wakes"] == WAKES_PER_PAIR and row["terminal_callbacks_bound"] == WAKES_PER_PAIR, row
        assert row["terminal_bytes_to_device"] > 0 and row["terminal_bytes_to_terminal"] > 0, row
        assert row["third_callbacks_bound"] == 0 and row["third_bytes"] == 0, row
    figures["b_cross_node"] = rows


# ---------------------------------------------------------------- c.


def test_c_a_device_added_on_one_node_is_known_to_all_at_once(ctx, figures):
    c = ctx
    s = c.site
    pool = s.pool("term", 12)
    samples = {k: [] for k in range(1, cs.N + 1)}
    cli_s = []  # how long `relay device add` itself took (process start, PostgreSQL, commit)

    def watch(k: int, base: float, t_exit_box: list, deadline: float):
        while time.monotonic() < deadline:
            try:
                v = s.metrics(k).get("relay_devices", 0)
            except (OSError, AssertionError):
                v = base
            if v >= base + 1:
                t = time.monotonic()
                while not t_exit_box:  # the CLI has exited by now (its commit is the NOTIFY)
                    if time.monotonic() > deadline:
                        return None
                    time.sleep(0.001)
                return max(0.0, t - t_exit_box[0])
            time.sleep(0.002)
        return None

    for i in range(CHANGES):
        node = i % cs.N + 1
        base = {k: s.metrics(k).get("relay_devices", 0) for k in range(1, cs.N + 1)}
        box: list = []
        deadline = time.monotonic() + PROPAGATION_BOUND + 10
        futs = {k: pool.submit(watch, k, base[k], box, deadline) for k in range(1, cs.N + 1)}
        t_cli = time.monotonic()
        s.device_add(f"prop-{i}", node=node)
        box.append(time.monotonic())
        cli_s.append(box[0] - t_cli)
        for k, f in futs.items():
            samples[k].append(f.result(30))
    missing = {k: xs.count(None) for k, xs in samples.items() if None in xs}
    assert not missing, f"changes never seen (per node): {missing}"
    allx = [x for xs in samples.values() for x in xs]
    fig = {"changes": CHANGES, "p50_ms": ms(statistics.median(allx)), "p99_ms": ms(pctl(allx, 0.99)),
           "max_ms": ms(max(allx)), "per_node_max_ms": {f"r{k}": ms(max(xs)) for k, xs in samples.items()},
           "seen_before_cli_exit": sum(1 for x in allx if x == 0.0),
           "cli_run_p50_ms": ms(statistics.median(cli_s)), "cli_run_max_ms": ms(max(cli_s))}
    figures["c_propagation_from_cli_exit"] = fig
    print(f"\nc. propagation (CLI exit -> relay_devices on each node), {CHANGES} changes x {cs.N} nodes: {fig}")
    assert max(allx) <= PROPAGATION_BOUND, fig

    # and such a device works at once: one new device per VIP, a protocol-level agent
    # (relayproto.FakeDevice, CONNECT_REQUEST_TO capable) registers right after the CLI's exit,
    # then a wake through every node
    firsts = {}
    for v in range(1, cs.N + 1):
        dev_id = f"fresh-v{v}"
        secret = s.device_add(dev_id, node=v)
        t_exit = time.monotonic()
        c.tokens[dev_id] = s.token(dev_id, node=v % cs.N + 1)
        c.vip_of[dev_id] = v
        fake = s.call("dev", _fake_device, dev_id, secret, v)
        c.fakes.append(fake)
        t_reg = time.monotonic() - t_exit
        for k in range(1, cs.N + 1):
            st, body, dt = pool.submit(c.get(c.node_host(k), dev_id, f"/fresh/{k}")).result(30)
            assert st == 200 and body == f"fake-device GET /fresh/{k}".encode(), (dev_id, k, st, body)
        firsts[dev_id] = {"token_and_registered_s": round(t_reg, 3),
                          "all_nodes_woken_s": round(time.monotonic() - t_exit, 3)}
    figures["c_fresh_device_first_wakes"] = firsts
    print(f"c. a device added, then registered and woken through all {cs.N} nodes: {firsts}")


def _fake_device(dev_id: str, secret: str, vip: int):
    """Runs in the device namespace: its sockets and threads stay there."""
    from relayproto import CAP_CONNECT_TO, FakeDevice
    fd = FakeDevice(dev_id, secret, (cs.VIPS[vip - 1], cs.UDP_PORT), bind_host="0.0.0.0", caps=CAP_CONNECT_TO)
    fd.register(timeout=10)
    fd.notify_a()
    fd.start_responder()
    return fd


# ---------------------------------------------------------------- c2.


@pytest.mark.timeout(90)
def test_c2_a_database_outage_moves_no_vip_and_wakes_go_on(ctx, figures):
    """PostgreSQL stops: /readyz stays 200, so keepalived moves nothing (fall 2 x 1 s passes
    several times over), every node keeps waking every device it knew, relay_store_up says 0;
    once the database is back, a device added right after reaches every node."""
    c = ctx
    s = c.site
    pool = s.pool("term", 12)
    h0 = s.holders()
    t0 = time.monotonic()
    s.pg.stop()
    down_seen = {}
    bad, ok, moved = [], 0, []
    end = t0 + 15
    while time.monotonic() < end and (len(down_seen) < cs.N or time.monotonic() - t0 < 4):
        for k in range(1, cs.N + 1):
            if k not in down_seen and s.metrics(k).get("relay_store_up", 1) == 0:
                down_seen[k] = round(time.monotonic() - t0, 2)
        futs = [(k, d, pool.submit(c.get(c.node_host(k), d, "/pg-down"))) for k in range(1, cs.N + 1) for d in c.agents]
        for k, d, f in futs:
            st, body, _ = f.result(30)
            if st == 200 and body == c.expect(d, "/pg-down"):
                ok += 1
            else:
                bad.append((f"r{k}", d, st, body[:100]))
        if s.holders() != h0:
            moved.append(s.holders())
        time.sleep(0.3)
    outage = time.monotonic() - t0
    t1 = time.monotonic()
    s.pg.start(timeout=60)
    restart = time.monotonic() - t1
    base = {k: s.metrics(k).get("relay_devices", 0) for k in range(1, cs.N + 1)}
    t2 = time.monotonic()
    s.device_add("after-outage", node=2)
    seen = {}
    end = time.monotonic() + 20
    while time.monotonic() < end and len(seen) < cs.N:
        for k in range(1, cs.N + 1):
            m = s.metrics(k)
            if k not in seen and m.get("relay_devices", 0) >= base[k] + 1 and m.get("relay_store_up", 0) == 1:
                seen[k] = round(time.monotonic() - t2, 3)
        time.sleep(0.02)
    fig = {"outage_s": round(outage, 1), "wakes_ok_during_outage": ok, "wakes_failed_during_outage": len(bad),
           "store_up_0_after_s": {f"r{k}": v for k, v in down_seen.items()}, "vip_moves": len(moved),
           "db_restart_s": round(restart, 2), "change_after_restart_seen_from_cli_start_s": {f"r{k}": v for k, v in seen.items()}}
    figures["c2_database_outage"] = fig
    print(f"\nc2. PostgreSQL outage: {fig}")
    assert not moved, f"a VIP moved during the database outage: {moved[:3]}"
    assert not bad, f"wakes failed during the database outage: {bad[:5]}"
    assert len(down_seen) == cs.N, f"relay_store_up did not drop to 0 on every node: {fig}"
    assert len(seen) == cs.N, f"a change after the database came back did not reach every node (with relay_store_up 1): {fig}"


# ---------------------------------------------------------------- e.


def test_e_wakes_per_second_through_one_two_three_nodes(ctx, figures):
    c = ctx
    need_mesh(c, "wakes through nodes that do not hold every device")
    s = c.site
    pool = s.pool("term", THROUGHPUT_CONCURRENCY)
    table = {}
    for n in range(1, cs.N + 1):
        nodes = list(range(1, n + 1))
        jobs = [(nodes[i % n], c.agents[i % len(c.agents)], f"/e/{n}/{i}") for i in range(THROUGHPUT_WAKES)]
        m0 = {k: s.metrics(k) for k in s.relays}
        cpu0 = {k: s.relays[k].cpu_seconds() for k in s.relays}
        t0 = time.monotonic()
        futs = [(d, p, pool.submit(c.get(c.node_host(k), d, p))) for k, d, p in jobs]
        res = [(d, p, f.result(60)) for d, p, f in futs]
        el = time.monotonic() - t0
        cpu1 = {k: s.relays[k].cpu_seconds() for k in s.relays}
        time.sleep(0.2)
        m1 = {k: s.metrics(k) for k in s.relays}
        bound = sum(m1[k].get('relay_wakes_total{outcome="bound"}', 0) - m0[k].get('relay_wakes_total{outcome="bound"}', 0)
                    for k in s.relays)
        cross = sum(m1[k].get("relay_cross_node_wakes_total", 0) - m0[k].get("relay_cross_node_wakes_total", 0)
                    for k in s.relays)
        bad = [(d, r[0], r[1][:100]) for d, p, r in res if r[0] != 200 or r[1] != c.expect(d, p)]
        cpu = sum(cpu1[k] - cpu0[k] for k in cpu0)
        lat = [r[2] for _, _, r in res]
        table[n] = {"wakes": THROUGHPUT_WAKES, "seconds": round(el, 2), "wakes_per_s": round(THROUGHPUT_WAKES / el, 1),
                    "relay_cpu_ms_per_wake": round(cpu / THROUGHPUT_WAKES * 1000, 3),
                    "relay_cpu_s_per_node": {f"r{k}": round(cpu1[k] - cpu0[k], 2) for k in cpu0},
                    "latency_p50_ms": ms(statistics.median(lat)), "latency_p99_ms": ms(pctl(lat, 0.99)),
                    "callbacks_bound": bound, "cross_node_wakes": cross, "failures": len(bad)}
        assert not bad, f"through {n} node(s): {len(bad)} failures: {bad[:5]}"
        # every request was a wake of its own (no link reused), and the ones whose device
        # notifies another node went through the mesh
        assert bound == THROUGHPUT_WAKES, table[n]
        want_cross = sum(1 for k, d, _ in jobs if c.holder[c.vip_of[d]] != k)
        assert cross == want_cross, (want_cross, table[n])
    base = table[1]
    for n, row in table.items():
        row["rate_ratio_to_1"] = round(row["wakes_per_s"] / base["wakes_per_s"], 2)
        row["cpu_per_wake_ratio_to_1"] = round(row["relay_cpu_ms_per_wake"] / base["relay_cpu_ms_per_wake"], 2) \
            if base["relay_cpu_ms_per_wake"] else None
    figures["e_throughput"] = table
    lines = ["\ne. wakes through N nodes (terminal concurrency %d, %d wakes each; devices: the %d real agents)"
             % (THROUGHPUT_CONCURRENCY, THROUGHPUT_WAKES, len(c.agents)),
             "  nodes  wakes/s  ratio  relay CPU ms/wake  ratio  p50 ms  p99 ms"]
    for n, r in table.items():
        lines.append(f"  {n:5d}  {r['wakes_per_s']:7.1f}  {r['rate_ratio_to_1']:5.2f}  {r['relay_cpu_ms_per_wake']:17.3f}"
                     f"  {r['cpu_per_wake_ratio_to_1'] or 0:5.2f}  {r['latency_p50_ms']:6.1f}  {r['latency_p99_ms']:6.1f}")
    print("\n".join(lines))


# ---------------------------------------------------------------- d.


@pytest.mark.timeout(200)
def test_d_failover_node_death_and_return(ctx, figures):
    c = ctx
    s = c.site
    h = s.holders()
    assert all(h[v] == [v] for v in range(1, cs.N + 1)), h
    steady = [d for d in c.tokens if d in c.agents or d in c.sims]  # not check c.'s one-shot devices
    vip1_devs = [d for d in steady if c.vip_of[d] == 1]
    other_devs = [d for d in steady if c.vip_of[d] != 1]
    stop = threading.Event()
    t_kill = [0.0]
    probes: list = []  # (t relative to the kill, ok)

    def prober():
        end = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < end:
            t = time.monotonic()
            try:
                ok = cs.http_get(cs.VIPS[0], cs.HTTP_PORT, "/healthz", timeout=0.1)[0] == 200
            except OSError:
                ok = False
            probes.append((t, ok))
            time.sleep(max(0.0, PROBE_EVERY - (time.monotonic() - t)))

    other_fail: list = []
    other_ok = [0]

    def others(k: int):
        end = time.monotonic() + 40
        i = 0
        while not stop.is_set() and time.monotonic() < end:
            d = other_devs[i % len(other_devs)]
            st, body, _ = c.get(c.node_host(k), d, f"/d-other/{i}", timeout=8)()
            if st == 200 and body == c.expect(d, f"/d-other/{i}"):
                other_ok[0] += 1
            else:
                other_fail.append((f"r{k}", d, st, body[:120], round(time.monotonic() - t_kill[0], 2)))
            i += 1
            time.sleep(0.05)

    recovered: dict = {}
    statuses: dict = {}  # what the probes got before each device answered (0: no answer in 2 s)

    def recover(d: str):
        end = t_kill[0] + 30
        while time.monotonic() < end:
            st, body, _ = c.get(cs.VIPS[0], d, "/back", timeout=2)()
            if st == 200 and body == c.expect(d, "/back"):
                recovered[d] = time.monotonic() - t_kill[0]
                break
            text = body[:200].decode(errors="replace").strip().replace(d, "ID")
            key = f"{st} {text}" if st else "no answer within 2 s"
            statuses[key] = statuses.get(key, 0) + 1
            time.sleep(0.2)

    pool = s.pool("term", len(vip1_devs) + 4)
    m2_before = s.metrics(2)
    bg = [pool.submit(prober), pool.submit(others, 2), pool.submit(others, 3)]
    time.sleep(1.0)
    assert other_ok[0] > 0 and not other_fail, other_fail[:5]
    t_kill[0] = time.monotonic()
    s.kill_node(1)
    rec = [pool.submit(recover, d) for d in vip1_devs]
    for f in rec:
        f.result(60)
    time.sleep(0.5)
    stop.set()
    for f in bg:
        f.result(60)
    after = [(t - t_kill[0], ok) for t, ok in probes if t >= t_kill[0]]
    first_ok = next((t for t, ok in after if ok), None)
    h = s.holders()
    m2_after = s.metrics(2)
    gap = first_ok
    rec_times = sorted(recovered.values())
    fig = {
        "advert_int_s": float(cs.ADVERT), "keepalive_s": cs.KEEPALIVE,
        "vip1_gap_s": round(gap, 3) if gap is not None else None,
        "vip1_probes_after_kill": len(after), "vip1_probes_failed": sum(1 for _, ok in after if not ok),
        "vip1_devices": len(vip1_devs), "vip1_devices_recovered": len(recovered),
        "recovery_p50_s": round(statistics.median(rec_times), 2) if rec_times else None,
        "recovery_max_s": round(max(rec_times), 2) if rec_times else None,
        "recovery_bound_s": round((gap or 0) + cs.KEEPALIVE + 1, 2),
        "other_vip_requests_ok": other_ok[0], "other_vip_failures": len(other_fail),
        "new_holder_period_requests": m2_after.get("relay_period_requests_total", 0)
        - m2_before.get("relay_period_requests_total", 0),
        "holders_after": {f"VIP{v}": ks for v, ks in h.items()},
        "probe_answers_before_recovery": dict(statuses),
    }
    figures["d_failover"] = fig
    print(f"\nd. failover of r1: {fig}")
    assert_readable(statuses)
    assert gap is not None, "VIP1 never answered again after r1 died"
    assert h[1] == [2] and h[2] == [2] and h[3] == [3], f"VIP holders after r1 died: {h}"
    assert not other_fail, f"VIP2/VIP3 devices failed during the failover: {other_fail[:10]}"
    late = {d: t for d, t in recovered.items() if t > fig["recovery_bound_s"]}
    never = [d for d in vip1_devs if d not in recovered]
    assert not never, f"VIP1 devices never reachable again: {never}"
    assert not late, f"VIP1 devices back later than gap + keepalive + 1 s = {fig['recovery_bound_s']} s: {late}"

    # r1 returns: nopreempt, it takes nothing back
    s.revive_node(1)
    s.start_relay(1)
    s.start_keepalived(1)
    assert s.keepalived[1].wait_text(r"VIP1\) Entering BACKUP STATE", 10), s.keepalived[1].text()[-2000:]
    time.sleep(3.0)  # past rise 2 (interval 1) and several adverts
    h = s.holders()
    figures["d_rejoin_holders"] = {f"VIP{v}": ks for v, ks in h.items()}
    assert h[1] == [2] and h[3] == [3], f"r1's return moved a VIP (nopreempt): {h}"

    # the deliberate move back: release-VIP1 on the holder
    probes.clear()
    stop.clear()
    pf = pool.submit(prober)
    time.sleep(0.5)
    t_move = time.monotonic()
    s.release(2, 1, 1)
    h = s.wait_holders({1: 1}, 10)
    moved = time.monotonic() - t_move
    time.sleep(0.5)
    s.release(2, 1, 0)
    stop.set()
    pf.result(30)
    after = [(t - t_move, ok) for t, ok in probes if t >= t_move]
    failed = [t for t, ok in after if not ok]
    blip = (max(failed) - min(failed) + PROBE_EVERY) if failed else 0.0
    time.sleep(2.0)
    h2 = s.holders()
    # the devices of VIP1 re-register at r1 (a new epoch: RESYNC) within a keepalive
    recovered.clear()
    statuses.clear()
    t_kill[0] = t_move
    mb = {k: s.metrics(k) for k in (1, 2, 3)}
    for f in [pool.submit(recover, d) for d in vip1_devs]:
        f.result(60)
    back = sorted(recovered.values())
    ma = {k: s.metrics(k) for k in (1, 2, 3)}
    figures["d_move_back_metrics"] = {f"r{k}": deltas(mb[k], ma[k], *MESH_FAMILIES) for k in (1, 2, 3)}
    figures["d_move_back"] = {"seconds_until_r1_holds_vip1": round(moved, 3), "healthz_blip_s": round(blip, 3),
                              "probes_failed": len(failed), "holders": {f"VIP{v}": ks for v, ks in h2.items()},
                              "devices_back_p50_s": round(statistics.median(back), 2) if back else None,
                              "devices_back_max_s": round(max(back), 2) if back else None,
                              "devices_back": len(back), "probe_answers_before_recovery": dict(statuses)}
    print(f"\nd. deliberate move of VIP1 back to r1: {figures['d_move_back']}")
    assert_readable(statuses)
    assert h2[1] == [1] and h2[2] == [2] and h2[3] == [3], f"after the move back: {h2}"
    assert len(back) == len(vip1_devs), f"VIP1 devices not reachable after the move back: {set(vip1_devs) - set(recovered)}"
    assert max(back) <= moved + cs.KEEPALIVE + 1, figures["d_move_back"]


# ---------------------------------------------------------------- f.


@pytest.mark.timeout(120)
def test_f_drain_moves_the_nodes_vips_and_its_return_moves_nothing(ctx, figures):
    """packaging/keepalived/README.md's drain: SIGTERM to r3's relay; its /readyz fails, keepalived
    gives VIP3 to its backup (r1) within fall 2 x interval 1 s (+1 s), the relay exits 0 after
    draining, VIP3's devices answer through VIP3 again within one keepalive; a restarted r3 takes
    nothing back."""
    c = ctx
    s = c.site
    h = s.holders()
    assert h[1] == [1] and h[2] == [2] and h[3] == [3], h
    vip3 = [d for d in c.tokens if c.vip_of[d] == 3 and (d in c.agents or d in c.sims)]
    pool = s.pool("term", len(vip3) + 2)
    probes: list = []
    stop = threading.Event()

    def prober():
        end = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < end:
            t = time.monotonic()
            try:
                ok = cs.http_get(cs.VIPS[2], cs.HTTP_PORT, "/healthz", timeout=0.1)[0] == 200
            except OSError:
                ok = False
            probes.append((t, ok))
            time.sleep(max(0.0, PROBE_EVERY - (time.monotonic() - t)))

    pf = pool.submit(prober)
    time.sleep(0.3)
    t0 = time.monotonic()
    s.relays[3].signal(cs.signal.SIGTERM)
    h = s.wait_holders({3: 1, 2: 2}, 10)
    moved = time.monotonic() - t0
    rc = s.relays[3].p.wait(15)

    back: dict = {}

    def recover(d: str):
        end = time.monotonic() + cs.KEEPALIVE + 8
        while time.monotonic() < end:
            st, body, _ = c.get(cs.VIPS[2], d, "/drained", timeout=2)()
            if st == 200 and body == c.expect(d, "/drained"):
                back[d] = time.monotonic() - t0
                return
            time.sleep(0.2)

    for f in [pool.submit(recover, d) for d in vip3]:
        f.result(60)
    stop.set()
    pf.result(30)
    after = [(t - t0, ok) for t, ok in probes if t >= t0]
    fails = [t for t, ok in after if not ok]
    fig = {"seconds_until_backup_holds_vip3": round(moved, 2), "relay_exit_code": rc,
           "vip3_healthz_unanswered_s": round(max(fails) - min(fails) + PROBE_EVERY, 2) if fails else 0.0,
           "vip3_devices": len(vip3), "vip3_devices_back": len(back),
           "devices_back_max_s": round(max(back.values()), 2) if back else None,
           "holders": {f"VIP{v}": ks for v, ks in h.items()}}
    figures["f_drain"] = fig
    print(f"\nf. drain of r3: {fig}")
    assert h[3] == [1] and h[2] == [2], f"after r3 drained: {h}"
    assert moved <= 2 * 1 + 2.0, fig  # fall 2, interval 1 s, plus a check in flight
    assert rc == 0, s.relays[3].text()[-2000:]
    assert len(back) == len(vip3), f"VIP3 devices not back after the drain: {set(vip3) - set(back)}"
    assert max(back.values()) <= moved + cs.KEEPALIVE + 1.5, fig

    # r3 returns: its instances become BACKUP again once /readyz answers twice; VIP3 stays on r1
    n_backup = s.keepalived[3].text().count("(VIP3) Entering BACKUP STATE")
    s.start_relay(3)
    end = time.monotonic() + 10
    while time.monotonic() < end and s.keepalived[3].text().count("(VIP3) Entering BACKUP STATE") <= n_backup:
        time.sleep(0.1)
    assert s.keepalived[3].text().count("(VIP3) Entering BACKUP STATE") > n_backup, s.keepalived[3].text()[-2000:]
    time.sleep(1.0)
    h = s.holders()
    figures["f_return_holders"] = {f"VIP{v}": ks for v, ks in h.items()}
    assert h[3] == [1] and h[2] == [2] and h[1] == [1], f"r3's return moved a VIP (nopreempt): {h}"


# ---------------------------------------------------------------- g.


@pytest.mark.timeout(60)
def test_g_a_node_that_gave_a_vip_away_does_not_claim_its_devices(ctx, figures):
    """Before main's 14066ce the old holder answered `sent` (and counted a CONNECT_REQUEST_TO it
    could not send): every such wake ended in a 504 after the wake timeout."""
    c = ctx
    s = c.site
    h = s.holders()
    assert h[1] == [1] and h[2] == [2] and h[3] == [1], h  # where test f left them
    # the planned move of VIP3 from r1 (alive, it keeps VIP1) back to r3, which restarted in
    # test f and so has no anchor of any device
    s.release(1, 3, 1)
    h = s.wait_holders({3: 3}, 10)
    s.release(1, 3, 0)
    assert h[3] == [3] and h[1] == [1], h
    devs = [d for d in c.tokens if c.vip_of[d] == 3 and (d in c.agents or d in c.sims)]
    before = {k: s.metrics(k) for k in (1, 2, 3)}
    pool = s.pool("term", len(devs) + 1)
    res = dict(zip(devs, [f.result(30) for f in [pool.submit(c.get(c.node_host(2), d, "/g", timeout=10))
                                                  for d in devs]]))
    after = {k: s.metrics(k) for k in (1, 2, 3)}
    fig = {"answers": {d: (st, round(dt, 2)) for d, (st, _, dt) in res.items()},
           "metrics": {f"r{k}": deltas(before[k], after[k], *MESH_FAMILIES) for k in (1, 2, 3)}}
    figures["g_old_holder"] = fig
    print(f"\ng. wakes through r2 of VIP3's devices right after VIP3 moved from r1 (alive) to r3: {fig}")
    # right after the move no device has notified r3 yet: a fast 503 (or 200 for one that
    # has), never the wake timeout
    slow = {d: (st, round(dt, 2)) for d, (st, _, dt) in res.items() if st not in (200, 503) or dt >= 2.0}
    assert not slow, fig
    sent = after[1].get('relay_mesh_wakes_handled_total{status="sent"}', 0) - before[1].get(
        'relay_mesh_wakes_handled_total{status="sent"}', 0)
    assert sent == 0, f"r1 no longer holds VIP3 but answered `sent` {sent} times: {fig}"
