"""The device store in PostgreSQL (`--store postgres://...`), against a real PostgreSQL 15
server that the session starts (pgserver.py, fixtures `postgres` and `pg_url` in conftest.py).

Several relays on loopback, each with its own ports and --data, share one database: a change
made with the CLI reaches every one of them (LISTEN/NOTIFY, the 500 ms poll as fallback); the
token key is shared; an outage of the database leaves a running relay serving what it knew and
it catches up afterwards; bad URLs fail fast and never print the password.

Propagation figures (CLI exit -> each relay knows) are printed and written to
<workdir>/propagation.txt; only a generous bound (5 s) is asserted.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import HEX64, run_cli
from helpers import wait_until

T = 10  # HTTP timeout
PROPAGATION_BOUND = 5.0  # every change seen by every relay within this (generous, not a benchmark)


# ---------------------------------------------------------------- helpers


def cli(store: str, data: Path, *args, env_store: bool = False, timeout: float = 30.0):
    """`relay ARGS --data DATA --store STORE` (or RELAY_STORE=STORE in the environment)."""
    if env_store:
        import subprocess
        from conftest import relay_bin
        env = dict(os.environ, RELAY_STORE=store)
        return subprocess.run([str(relay_bin())] + [str(a) for a in args] + ["--data", str(data)],
                              capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    return run_cli(list(args) + ["--data", data, "--store", store], timeout)


def add(store: str, data: Path, device_id: str) -> str:
    r = cli(store, data, "device", "add", device_id)
    assert r.returncode == 0, f"device add {device_id}: {r.returncode} {r.stderr}"
    lines = [l.strip() for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 1 and HEX64.match(lines[0]), r.stdout
    return lines[0]


def mint(store: str, data: Path, device_id: str) -> str:
    r = cli(store, data, "token", device_id)
    assert r.returncode == 0, f"token {device_id}: {r.returncode} {r.stderr}"
    return r.stdout.strip()


def pg_relays(relay_factory, url: str, n: int, *extra) -> list:
    rs = []
    for _ in range(n):
        r = relay_factory("--store", url, "--wake-timeout", "5s", *extra)
        rs.append(r)
    return rs


def ask(relay, device_id: str, tok: str) -> int:
    return requests.get(relay.dev_url(device_id, "/"), headers={"Authorization": f"Bearer {tok}"},
                        timeout=T).status_code


def devices_metric(relay) -> float:
    return relay.metrics()("relay_devices")


def assert_no_password(text: str, password: str):
    assert password not in text, f"the password appears in the output: {text!r}"


def pctl(xs: list, q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def report(workdir: Path, title: str, samples: dict):
    lines = [title]
    for name, xs in samples.items():
        ms = [x * 1000 for x in xs]
        lines.append(f"  {name}: n={len(ms)} p50={statistics.median(ms):.1f} ms p99={pctl(ms, 0.99):.1f} ms "
                     f"max={max(ms):.1f} ms")
    text = "\n".join(lines)
    print("\n" + text)
    with open(workdir / "propagation.txt", "a") as f:
        f.write(text + "\n")


# ---------------------------------------------------------------- the CLI, both backends


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, workdir):
    """(store argument, data dir) for each backend; the CLI must behave the same on both."""
    data = workdir / f"data-{request.param}"
    data.mkdir()
    if request.param == "sqlite":
        return "sqlite", data
    return request.getfixturevalue("pg_url"), data


def test_cli_same_behaviour_on_both_backends(store):
    url, data = store
    s1 = add(url, data, "c1")
    s2 = add(url, data, "c2")
    assert s1 != s2
    r = cli(url, data, "device", "list")
    assert r.returncode == 0, r.stderr
    assert [l.split("\t")[0] for l in r.stdout.splitlines()] == ["c1", "c2"]
    assert all(len(l.split("\t")) == 2 and l.split("\t")[1].endswith("Z") for l in r.stdout.splitlines()), r.stdout

    r = cli(url, data, "device", "add", "c1")
    assert r.returncode == 1 and r.stdout == "" and "already exists" in r.stderr, (r.returncode, r.stdout, r.stderr)
    r = cli(url, data, "device", "remove", "ghost")
    assert r.returncode == 1 and "no device 'ghost'" in r.stderr, (r.returncode, r.stderr)
    r = cli(url, data, "device", "add", "-bad-")
    assert r.returncode != 0

    tok = mint(url, data, "c1")
    tid = tok.split(".")[2]
    r = cli(url, data, "token", "list")
    assert r.returncode == 0, r.stderr
    rows = [l.split("\t") for l in r.stdout.splitlines()]
    assert [(x[0], x[1], x[4]) for x in rows] == [(tid, "c1", "valid")], r.stdout
    r = cli(url, data, "token", "revoke", tid)
    assert r.returncode == 0 and r.stdout.split() == [tid], (r.returncode, r.stdout, r.stderr)
    r = cli(url, data, "token", "list", "--all")
    assert [l.split("\t")[4] for l in r.stdout.splitlines()] == ["revoked"], r.stdout
    r = cli(url, data, "token", "revoke", "0123456789abcdef")
    assert r.returncode != 0
    r = cli(url, data, "token", "nobody")
    assert r.returncode != 0

    assert cli(url, data, "device", "remove", "c1").returncode == 0
    r = cli(url, data, "device", "list")
    assert [l.split("\t")[0] for l in r.stdout.splitlines()] == ["c2"]
    assert cli(url, data, "token", "c1").returncode != 0
    assert add(url, data, "c1") != s1, "re-adding makes a new secret"

    r = cli(url, data, "admin-key", "create")
    assert r.returncode == 0, r.stderr
    r = cli(url, data, "admin-key", "list")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


def test_cli_results_identical_across_backends(workdir, pg_url):
    """Same command sequence on both stores: same exit codes, same stdout shape, same stderr."""
    seq = [("device", "add", "x1"), ("device", "add", "x1"), ("device", "remove", "nope"),
           ("device", "add", "x2"), ("device", "remove", "x2"), ("device", "remove", "x2"),
           ("token", "x2"), ("token", "revoke", "--device", "ghost")]
    out = {}
    for name, url in (("sqlite", "sqlite"), ("postgres", pg_url)):
        data = workdir / name
        data.mkdir()
        res = []
        for args in seq:
            r = cli(url, data, *args)
            res.append((r.returncode, "secret" if HEX64.match(r.stdout.strip()) else r.stdout, r.stderr))
        out[name] = res
    assert out["sqlite"] == out["postgres"]


def test_relay_store_env_and_postgresql_scheme(workdir, postgres, pg_url):
    data = workdir / "d"
    data.mkdir()
    add(pg_url, data, "e1")
    r = cli(pg_url, data, "device", "list", env_store=True)
    assert r.returncode == 0 and r.stdout.startswith("e1\t"), (r.returncode, r.stdout, r.stderr)
    alt = pg_url.replace("postgres://", "postgresql://", 1) + "?sslmode=disable"
    r = cli(alt, data, "device", "list")
    assert r.returncode == 0 and r.stdout.startswith("e1\t"), (r.returncode, r.stdout, r.stderr)
    # password from PGPASSWORD instead of the URL (what --help recommends)
    import subprocess
    from conftest import relay_bin
    nopw = pg_url.replace(f":{postgres.password}@", "@")
    r = subprocess.run([str(relay_bin()), "device", "list", "--data", str(data), "--store", nopw], capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, PGPASSWORD=postgres.password), stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stdout.startswith("e1\t"), (r.returncode, r.stdout, r.stderr)
    # nothing of the store went into --data besides local files
    assert not (data / "relay.sqlite").exists()


# ---------------------------------------------------------------- bad URLs


@pytest.mark.timeout(90)
def test_bad_store_urls_fail_fast_and_hide_the_password(workdir, postgres, pg_url, relay_factory):
    data = workdir / "d"
    data.mkdir()
    secret = "Sup3rSekretPw"
    cases = [
        ("postgres://relay:" + secret + "@nohost.invalid/x", "device store"),
        (postgres.url_for("relay", password=secret), "device store"),  # wrong password
        (postgres.url_for("relay", password=secret).replace(str(postgres.port), "1"), "device store"),  # refused
        ("mysql://u:" + secret + "@x/y", "not a store"),
    ]
    for url, needle in cases:
        for args in (("device", "list"), ("device", "add", "b1"), ("token", "b1")):
            t0 = time.monotonic()
            r = cli(url, data, *args, timeout=40)
            took = time.monotonic() - t0
            both = r.stdout + r.stderr
            assert r.returncode != 0, (url, args, both)
            assert needle in r.stderr, (url, args, r.stderr)
            assert_no_password(both, secret)
            assert took < 30, f"{args} against {url.replace(secret, '***')} took {took:.1f}s"
        if url.startswith("postgres"):
            assert url.replace(":" + secret, "") in r.stderr or "postgres://" in r.stderr, r.stderr
    # the relay refuses to start on a bad store too, with the same kind of message
    from conftest import Proc
    for k, (url, needle) in enumerate(cases):
        rl = relay_factory("--store", url, start=False)
        p = Proc(rl.args(), workdir, f"badserve{k}")
        try:
            rc = p.wait(40)
            assert rc is not None, f"relay serve with a bad store kept running: {url.replace(secret, '***')}"
            assert rc != 0
            assert needle in p.stderr(), p.stderr()
            assert_no_password(p.stderr() + p.stdout(), secret)
        finally:
            p.stop()


# ---------------------------------------------------------------- a cluster of relays


@pytest.mark.timeout(300)
def test_changes_reach_every_relay_and_devices_work_through_each(workdir, pg_url, relay_factory, recording_server,
                                                                 agent_factory):
    relays = pg_relays(relay_factory, pg_url, 3)
    data = workdir / "cli"
    data.mkdir()
    # a device added with the CLI: served through every relay (an agent per relay, same secret)
    secret = add(pg_url, data, "cl1")
    tok = mint(pg_url, data, "cl1")
    srv = recording_server()
    for r in relays:
        assert wait_until(lambda: ask(r, "cl1", tok) in (503, 504), PROPAGATION_BOUND, 0.02), "device unknown"
        r.devices["cl1"] = secret
        agent_factory(r, "cl1", srv.port)
    for r in relays:
        resp = requests.get(r.dev_url("cl1", "/hello"), headers={"Authorization": f"Bearer {tok}"}, timeout=T)
        assert resp.status_code == 200, (r.base, resp.status_code, resp.text[:200])

    # a token minted with the store is accepted by every relay (one shared token key), and its
    # revocation reaches every relay
    tok2 = mint(pg_url, data, "cl1")
    for r in relays:
        assert requests.get(r.dev_url("cl1", "/"), headers={"Authorization": f"Bearer {tok2}"}, timeout=T).status_code == 200
    r = cli(pg_url, data, "token", "revoke", tok2.split(".")[2])
    assert r.returncode == 0, r.stderr
    for rl in relays:
        assert wait_until(lambda: ask(rl, "cl1", tok2) == 401, PROPAGATION_BOUND, 0.02), f"{rl.base}: revoked token served"
        assert ask(rl, "cl1", tok) == 200, "the other token keeps working"

    # removal reaches every relay
    assert cli(pg_url, data, "device", "remove", "cl1").returncode == 0
    for rl in relays:
        assert wait_until(lambda: ask(rl, "cl1", tok) == 401, PROPAGATION_BOUND, 0.02), f"{rl.base}: removed device served"


@pytest.mark.timeout(400)
def test_propagation_time_over_many_changes(workdir, pg_url, relay_factory):
    relays = pg_relays(relay_factory, pg_url, 3)
    data = workdir / "cli"
    data.mkdir()
    base = [devices_metric(r) for r in relays]
    assert base == [0, 0, 0]
    lat = {f"relay{i + 1}": [] for i in range(len(relays))}
    n_changes = 50

    def watch(i, r, want, t_exit, out):
        end = t_exit + PROPAGATION_BOUND
        while time.monotonic() < end:
            try:
                if devices_metric(r) == want:
                    out[i] = time.monotonic() - t_exit
                    return
            except requests.RequestException:
                pass
            time.sleep(0.002)

    count = 0
    for k in range(n_changes):
        # alternate adds and removals: odd changes remove the device the previous one added
        if k % 2 == 0:
            args, count = ("device", "add", f"p{k}"), count + 1
        else:
            args, count = ("device", "remove", f"p{k - 1}"), count - 1
        r = cli(pg_url, data, *args)
        t_exit = time.monotonic()
        assert r.returncode == 0, r.stderr
        out = {}
        ths = [threading.Thread(target=watch, args=(i, rl, count, t_exit, out)) for i, rl in enumerate(relays)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(PROPAGATION_BOUND + 5)
        missing = [relays[i].base for i in range(len(relays)) if i not in out]
        assert not missing, f"change {k} ({' '.join(args)}) not seen within {PROPAGATION_BOUND}s by {missing}"
        for i, v in out.items():
            lat[f"relay{i + 1}"].append(v)
    report(workdir, f"PostgreSQL store: CLI exit -> relay knows ({n_changes} changes, 3 relays, "
                    f"RELAY_THREADS={os.environ.get('RELAY_THREADS', 'unset')})",
           dict(lat, all=[x for xs in lat.values() for x in xs]))


def test_token_key_shared_between_relays(workdir, pg_url, relay_factory):
    a, b = pg_relays(relay_factory, pg_url, 2)
    da, db = a.data, b.data
    add(pg_url, da, "tk1")
    # minted with relay a's data directory, used on relay b (and the reverse)
    ta = mint(pg_url, da, "tk1")
    tb = mint(pg_url, db, "tk1")
    for r in (a, b):
        for t in (ta, tb):
            assert wait_until(lambda: ask(r, "tk1", t) == 503, PROPAGATION_BOUND, 0.02), (r.base, ask(r, "tk1", t))
    # a token of a SQLite store (another key) is refused by the cluster
    sq = workdir / "sq"
    sq.mkdir()
    add("sqlite", sq, "tk1")
    foreign = mint("sqlite", sq, "tk1")
    for r in (a, b):
        assert ask(r, "tk1", foreign) == 401


# ---------------------------------------------------------------- database outage


@pytest.mark.timeout(240)
def test_database_outage_keeps_serving_and_recovers(workdir, postgres, pg_url, relay_factory, recording_server,
                                                    agent_factory):
    relay = pg_relays(relay_factory, pg_url, 1)[0]
    data = workdir / "cli"
    data.mkdir()
    secret = add(pg_url, data, "old1")
    tok = mint(pg_url, data, "old1")
    assert wait_until(lambda: ask(relay, "old1", tok) == 503, PROPAGATION_BOUND, 0.02)
    srv = recording_server()
    relay.devices["old1"] = secret
    agent_factory(relay, "old1", srv.port)
    assert requests.get(relay.dev_url("old1", "/a"), headers={"Authorization": f"Bearer {tok}"}, timeout=T).status_code == 200

    postgres.stop()
    try:
        # the relay notices (a failing sync) and keeps serving what it knew
        assert wait_until(lambda: "device.sync.failed" in relay.stderr(), 15, 0.1), \
            f"no device.sync.failed logged\n{relay.stderr()[-3000:]}"
        for i in range(5):
            resp = requests.get(relay.dev_url("old1", f"/during{i}"), headers={"Authorization": f"Bearer {tok}"},
                                timeout=T)
            assert resp.status_code == 200, (resp.status_code, resp.text[:200])
            time.sleep(0.3)
        assert relay.alive()
        assert relay.stderr().count("device.sync.failed") == 1, "device.sync.failed should be logged once per outage"
        rz = requests.get(relay.url("/readyz"), timeout=T).status_code
        assert rz in (200, 503), rz
        assert relay.healthy(), "/healthz stays 200 while the store is down"
        # the CLI fails with a clear error and no password
        t0 = time.monotonic()
        r = cli(pg_url, data, "device", "add", "new1", timeout=40)
        assert r.returncode != 0 and "device store" in r.stderr, (r.returncode, r.stderr)
        assert_no_password(r.stdout + r.stderr, postgres.password)
        assert time.monotonic() - t0 < 30
        print(f"\noutage: CLI said {r.stderr.strip()!r}; /readyz {rz}")
    finally:
        postgres.start()

    # back: a device added now reaches the running relay
    add(pg_url, data, "new1")
    t_exit = time.monotonic()
    tok_new = mint(pg_url, data, "new1")
    assert wait_until(lambda: ask(relay, "new1", tok_new) == 503, 15, 0.02), \
        f"device added after the outage never reached the relay\n{relay.stderr()[-3000:]}"
    print(f"after the outage: new device known {time.monotonic() - t_exit:.3f}s after the CLI's exit")
    assert wait_until(lambda: "device.sync.recovered" in relay.stderr(), 15, 0.1), relay.stderr()[-3000:]
    assert wait_until(lambda: requests.get(relay.url("/readyz"), timeout=T).status_code == 200, 15, 0.1)
    resp = requests.get(relay.dev_url("old1", "/after"), headers={"Authorization": f"Bearer {tok}"}, timeout=T)
    assert resp.status_code == 200


@pytest.mark.timeout(240)
def test_changes_made_during_an_outage_by_another_writer_are_picked_up(workdir, postgres, pg_url, relay_factory):
    """The relay loses its connection (server restart) and must resync: a change made while its
    LISTEN connection was gone (no NOTIFY reaches it) still arrives."""
    relay = pg_relays(relay_factory, pg_url, 1)[0]
    data = workdir / "cli"
    data.mkdir()
    add(pg_url, data, "k1")
    assert wait_until(lambda: devices_metric(relay) == 1, PROPAGATION_BOUND, 0.02)
    postgres.stop()
    postgres.start()
    # immediately after the restart, before the relay has necessarily reconnected
    add(pg_url, data, "k2")
    assert cli(pg_url, data, "device", "remove", "k1").returncode == 0
    tok = mint(pg_url, data, "k2")
    assert wait_until(lambda: ask(relay, "k2", tok) == 503, 15, 0.05), relay.stderr()[-3000:]
    assert wait_until(lambda: devices_metric(relay) == 1, 15, 0.05)


# ---------------------------------------------------------------- migration race


@pytest.mark.timeout(180)
@pytest.mark.parametrize("n", [2, 3])
def test_relays_started_together_on_an_empty_database(workdir, pg_url, relay_factory, n):
    relays = [relay_factory("--store", pg_url, start=False) for _ in range(n)]
    barrier = threading.Barrier(n)
    errors = []

    def go(r):
        try:
            barrier.wait(10)
            r.start()
        except BaseException as e:  # noqa: BLE001 (pytest.fail raises an exception of its own)
            errors.append(f"{r.base}: {e}")

    ths = [threading.Thread(target=go, args=(r,)) for r in relays]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
    assert not errors, "\n".join(errors)
    assert all(r.alive() for r in relays)
    # and CLI processes opening the same fresh schema at once
    data = workdir / "cli"
    data.mkdir()
    add(pg_url, data, "m1")
    for r in relays:
        assert wait_until(lambda: devices_metric(r) == 1, PROPAGATION_BOUND, 0.02), r.base


@pytest.mark.timeout(120)
def test_concurrent_cli_first_opens_on_an_empty_database(workdir, postgres):
    name = postgres.create_database("race")
    url = postgres.url_for(name)
    try:
        import subprocess
        from conftest import relay_bin
        procs = [subprocess.Popen([str(relay_bin()), "device", "add", f"r{i}", "--data", str(workdir), "--store", url],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
                 for i in range(6)]
        res = []
        for p in procs:
            try:
                out, err = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate(timeout=5)
            res.append((p.returncode, out, err))
        assert all(rc == 0 for rc, _, _ in res), res
        r = cli(url, workdir, "device", "list")
        assert sorted(l.split("\t")[0] for l in r.stdout.splitlines()) == [f"r{i}" for i in range(6)]
    finally:
        postgres.drop_database(name)


# ---------------------------------------------------------------- URL forms


def test_percent_encoded_password_with_special_characters(workdir, postgres, pg_url):
    """A password with @ : / ? % # in it, percent-encoded in the URL, works; neither its plain
    nor its encoded form is ever printed (a wrong database name makes the CLI fail)."""
    import secrets
    import urllib.parse
    role = f"odd_{secrets.token_hex(3)}"
    pw = "p@ss:w/rd?%#x" + secrets.token_hex(4)
    postgres.psql(f"CREATE ROLE {role} LOGIN PASSWORD '{pw}'")
    dbname = pg_url.rsplit("/", 1)[1]
    postgres.psql(f"GRANT ALL ON DATABASE {dbname} TO {role}")
    postgres.psql(f"GRANT ALL ON SCHEMA public TO {role}", dbname=dbname)
    try:
        url = postgres.url_for(dbname, password=pw, user=role)
        assert urllib.parse.quote(pw, safe="") in url
        data = workdir / "d"
        data.mkdir()
        r = cli(url, data, "device", "add", "sp1")
        assert r.returncode == 0, r.stderr
        r = cli(url, data, "device", "list")
        assert r.returncode == 0 and r.stdout.startswith("sp1\t"), (r.returncode, r.stdout, r.stderr)
        bad = postgres.url_for("no_such_db", password=pw, user=role)
        r = cli(bad, data, "device", "list")
        assert r.returncode != 0 and "device store" in r.stderr, r.stderr
        assert_no_password(r.stdout + r.stderr, pw)
        assert_no_password(r.stdout + r.stderr, urllib.parse.quote(pw, safe=""))
        assert "no_such_db" in r.stderr, r.stderr
    finally:
        postgres.psql(f"DROP OWNED BY {role}", dbname=dbname)
        postgres.psql(f"DROP ROLE IF EXISTS {role}")


def test_relay_serve_takes_the_store_from_the_environment(workdir, pg_url, relay_factory):
    r = relay_factory(start=False)
    r.env = dict(os.environ, RELAY_STORE=pg_url)
    r.start()
    data = workdir / "cli"
    data.mkdir()
    add(pg_url, data, "env1")
    assert wait_until(lambda: devices_metric(r) == 1, PROPAGATION_BOUND, 0.02), "RELAY_STORE not used by serve"
    assert not (r.data / "relay.sqlite").exists(), "a PostgreSQL relay wrote a SQLite store in --data"


def test_relay_serve_takes_the_store_from_the_config_file(workdir, pg_url, relay_factory):
    cfg = workdir / "relay.yaml"
    cfg.write_text(f"store: {pg_url}\n")
    r = relay_factory("--config", cfg)
    data = workdir / "cli"
    data.mkdir()
    add(pg_url, data, "cfg1")
    assert wait_until(lambda: devices_metric(r) == 1, PROPAGATION_BOUND, 0.02), "config key store: not used"
