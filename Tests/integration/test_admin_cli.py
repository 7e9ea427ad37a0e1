"""The CLI against a running relay (through its admin API, found in <data>/admin.json): live
STATUS, LAST SEEN and ADDRESS columns, `--json`, `device show`, `device wait`, changes applied
at once; and without a running relay the same commands on the store, as before. Also the
README's Quick start, pasted as one block."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

import relayproto as rp
from admin_helpers import Admin
from conftest import REPO, free_port, relay_bin

pytestmark = pytest.mark.needs_relay


def test_device_list_live_columns_and_json(relay, fake_devices):
    sec = relay.add_device("cli-on", wait=False)
    relay.add_device("cli-off", wait=False)
    dev = rp.FakeDevice("cli-on", sec, relay.udp_addr)  # registers at once: `device add` synced
    fake_devices.append(dev)
    dev.register(timeout=1)
    dev.notify_a()
    assert relay.cli("device", "wait", "cli-on", "--timeout", "5s").returncode == 0
    r = relay.cli("device", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert re.match(r"ID\s+STATUS\s+LAST SEEN\s+ADDRESS\s+CREATED$", lines[0]), lines
    rows = {l.split()[0]: l.split() for l in lines[1:]}
    assert rows["cli-on"][1] == "online" and rows["cli-on"][2].endswith("s")
    assert f"127.0.0.1:{dev.addr(0)[1]}" in lines[[l.split()[0] for l in lines].index("cli-on")]
    assert rows["cli-off"][1:4] == ["offline", "never", "-"]
    js = json.loads(relay.cli("device", "list", "--json").stdout)
    by = {d["id"]: d for d in js}
    assert by["cli-on"]["online"] is True and by["cli-on"]["address"] == f"127.0.0.1:{dev.addr(0)[1]}"
    assert by["cli-off"]["online"] is False and by["cli-off"]["address"] is None
    only = json.loads(relay.cli("device", "list", "--json", "--online", "true").stdout)
    assert [d["id"] for d in only] == ["cli-on"]
    show = relay.cli("device", "show", "cli-on")
    assert show.returncode == 0 and re.search(r"status:\s+online", show.stdout), show.stdout
    assert re.search(r"address:\s+127\.0\.0\.1:\d+", show.stdout)
    detail = json.loads(relay.cli("device", "show", "cli-on", "--json").stdout)
    assert detail["id"] == "cli-on" and "address_history" in detail
    assert relay.cli("device", "show", "ghost").returncode != 0
    # wait times out for a device that never notifies
    w = relay.cli("device", "wait", "cli-off", "--timeout", "300ms")
    assert w.returncode == 1 and "not online" in w.stderr


def test_cli_changes_apply_at_once(relay, fake_devices):
    """No 500 ms store poll in the way: add, remove and revoke are in effect when the CLI returns."""
    t0 = time.monotonic()
    sec = relay.add_device("fast-1", wait=False)
    dev = rp.FakeDevice("fast-1", sec, relay.udp_addr)
    fake_devices.append(dev)
    dev.register(timeout=0.3)
    dev.notify_a()
    took = time.monotonic() - t0
    tok = relay.token("fast-1")
    tid = tok.split(".")[2]  # <id>.<expiry>.<tid>.<mac>
    assert relay.cli("token", "revoke", tid).returncode == 0
    r = requests.get(relay.dev_url("fast-1"), headers={"Authorization": f"Bearer {tok}"}, timeout=5)
    assert r.status_code == 401 and "revoked" in r.text
    tok2 = relay.token("fast-1")
    hdr = {"Authorization": f"Bearer {tok2}"}
    assert "online" in relay.cli("device", "show", "fast-1").stdout  # (a request would wake it)
    assert relay.remove_device("fast-1").returncode == 0
    r = requests.get(relay.dev_url("fast-1"), headers=hdr, timeout=5)
    assert r.status_code == 401, r.text  # removed at once: its tokens no longer verify
    assert took < 3


def test_without_a_running_relay_the_store_answers(relay_factory):
    relay = relay_factory()
    relay.add_device("st-1", wait=False)
    relay.stop()
    assert not (relay.data / "admin.json").exists()
    r = relay.cli("device", "list")
    assert r.returncode == 0
    assert [l.split("\t")[0] for l in r.stdout.splitlines()] == ["st-1"]
    assert len(r.stdout.splitlines()[0].split("\t")) == 2
    js = json.loads(relay.cli("device", "list", "--json").stdout)
    assert js[0]["id"] == "st-1" and js[0]["online"] is None
    show = relay.cli("device", "show", "st-1")
    assert show.returncode == 0 and "no running relay" in show.stdout
    # A stale admin.json (relay killed) is ignored.
    (relay.data / "admin.json").write_text(json.dumps(
        {"url": "http://127.0.0.1:1", "address": "127.0.0.1:1", "key": "rk_x", "pid": 2 ** 22 - 7, "tls": False}))
    assert relay.cli("device", "list").returncode == 0
    assert relay.cli("device", "add", "st-2").returncode == 0


def quickstart_script(http_port: int, udp_port: int, web_port: int, www: Path) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    assert blocks[0].strip() == "make run"
    script = blocks[1] + blocks[2]
    script = script.replace("RELAY=.build/release/relay", f"RELAY={relay_bin()}")
    script = script.replace("127.0.0.1:4700", f"127.0.0.1:{udp_port}").replace(":8080", f":{http_port}")
    script = script.replace("8000", str(web_port)).replace("/tmp/cam-1", str(www))
    return script


@pytest.mark.timeout(90)
def test_readme_quick_start_as_one_block(relay_factory, workdir):
    """The README's commands, in order, pasted as one block against a fresh relay: both curls
    get the device's page at once (no 404 from a device the relay does not know yet, no 503
    from one that has not notified yet)."""
    relay = relay_factory()
    web = free_port()
    script = quickstart_script(relay.http_port, relay.udp_port, web, workdir / "cam-1")
    assert "device wait" in script
    env = dict(os.environ, RELAY_DATA=str(relay.data))
    p = subprocess.Popen(["bash", "-c", "set -e\n" + script + "\nkill $(jobs -p)\nwait 2>/dev/null || true\n"],
                         cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=60)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert p.returncode == 0, f"{out}\n--- stderr ---\n{err}\n--- script ---\n{script}"
    assert out.count("<h1>hello from cam-1</h1>") == 2, f"{out}\n--- stderr ---\n{err}"
    assert f"http://cam-1.localhost:{relay.http_port}/?relay_token=" in out


def test_console_command_prints_a_login_link(relay_factory):
    relay = relay_factory()
    r = relay.cli("console")
    assert r.returncode == 0, r.stderr
    url, _, key = r.stdout.strip().partition("/#key=")
    assert url == json.loads((relay.data / "admin.json").read_text())["url"]
    assert requests.get(url + "/api/v1/summary", headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code == 200
    assert "<title>relay console</title>" in requests.get(url + "/", timeout=5).text
    relay.stop()
    r = relay.cli("console")
    assert r.returncode == 1 and "no running relay" in r.stderr
