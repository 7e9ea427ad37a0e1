"""relay-agent, the device agent in C on its own (issue 13), beyond the cases every agent test
runs against both builds (@both_agents): its config reload on SIGHUP, the library's example
(links handed to firmware code as sockets), the fully static build, the cross builds for
armhf and mipsel run under qemu-user-static against the real relay, and the packaging files.

The binaries come from `make agent` and `make agent-cross` (make test builds both); without
them these tests skip, unless RELAY_AGENT_CROSS=1 (set by make test) says they must exist."""
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import REPO, Proc, hostport, relay_agent_bin
from helpers import wait_until

AGENT_OUT = REPO / ".build-agent"
CROSS = {
    # arch: (qemu, the cross compiler's libc root, the target triplet)
    "armhf": ("qemu-arm-static", "/usr/arm-linux-gnueabihf", "arm-linux-gnueabihf"),
    "mipsel": ("qemu-mipsel-static", "/usr/mipsel-linux-gnu", "mipsel-linux-gnu"),
}


def built(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("RELAY_AGENT_CROSS") == "1":
            pytest.fail(f"{path} is missing: make agent agent-cross")
        pytest.skip(f"{path} not built: make agent agent-cross")
    return path


def fetch(relay, device_id: str, path: str) -> requests.Response:
    return requests.get(relay.dev_url(device_id, path), headers=relay.auth(device_id), timeout=20)


def notified(relay, before) -> bool:
    return relay.metrics()("relay_notify_total", kind="a") > before("relay_notify_total", kind="a")


def start(relay, workdir, cleanup, argv: list, device_id: str, forward_port: int, name: str, timeout=30) -> Proc:
    secret = relay.devices.get(device_id) or relay.add_device(device_id)
    before = relay.metrics()
    p = Proc(argv + ["--relay", hostport(relay.host, relay.udp_port), "--id", device_id, "--key", secret,
                     "--forward", hostport("127.0.0.1", forward_port)], workdir, name)
    cleanup.append(p.stop)
    assert wait_until(lambda: notified(relay, before) or not p.alive(), timeout), p.describe()
    assert p.alive(), p.describe()
    return p


# ---------------------------------------------------------------- SIGHUP


@pytest.mark.timeout(60)
def test_sighup_rereads_the_config_and_keeps_a_bad_one_out(relay, recording_server, workdir, cleanup):
    first, second = recording_server(), recording_server()
    secret = relay.add_device("hup1")
    key = workdir / "hup1.key"
    key.write_text(secret + "\n")
    key.chmod(0o600)
    cfg = workdir / "agent.yaml"

    def write(forward_port, extra=""):
        cfg.write_text(f'relay: "{hostport(relay.host, relay.udp_port)}"\nid: hup1\nkey-file: {key}\n'
                       f"forward: '127.0.0.1:{forward_port}'  # the web server\n{extra}")

    write(first.port)
    before = relay.metrics()
    p = Proc([relay_agent_bin(), "--config", cfg], workdir, "agent-hup")
    cleanup.append(p.stop)
    assert wait_until(lambda: notified(relay, before) or not p.alive(), 20), p.describe()
    assert fetch(relay, "hup1", "/one").status_code == 200
    assert "/one" in first.paths()

    write(second.port)
    registered = p.stderr().count("agent.registered")
    p.send_signal(signal.SIGHUP)
    assert wait_until(lambda: p.stderr().count("agent.registered") > registered, 15), p.describe()
    assert "agent.reloaded" in p.stderr()
    assert wait_until(lambda: fetch(relay, "hup1", "/two").status_code == 200, 10)
    assert "/two" in second.paths() and "/two" not in first.paths()

    # A config that does not work: logged, and the agent goes on with the last good one.
    write(first.port, "colour: blue\n")
    registered = p.stderr().count("agent.registered")
    p.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "agent.reload_failed" in p.stderr(), 10), p.describe()
    assert "colour (from" in p.stderr() and "unknown key" in p.stderr()
    assert wait_until(lambda: p.stderr().count("agent.registered") > registered, 15), p.describe()
    assert fetch(relay, "hup1", "/three").status_code == 200
    assert "/three" in second.paths()

    assert p.stop() == 0, p.describe()
    assert wait_until(lambda: "device.left" in relay.stderr(), 5)


def test_syslog_flag_and_help(workdir):
    r = subprocess.run([str(relay_agent_bin()), "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "--syslog" in r.stdout and "--key-file" in r.stdout, r
    r = subprocess.run([str(relay_agent_bin()), "--colour", "blue"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 64 and "unknown option '--colour'" in r.stderr, r


# ---------------------------------------------------------------- the library


@pytest.mark.timeout(60)
def test_library_example_serves_links_handed_to_it(relay, workdir, cleanup):
    example = built(AGENT_OUT / "agent-example")
    secret = relay.add_device("fw1")
    before = relay.metrics()
    out, err = open(workdir / "example.stdout", "wb"), open(workdir / "example.stderr", "wb")
    p = subprocess.Popen([str(example), hostport(relay.host, relay.udp_port), "fw1"], stdin=subprocess.PIPE,
                         stdout=out, stderr=err, start_new_session=True)

    def stop():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        out.close()
        err.close()

    cleanup.append(stop)
    p.stdin.write((secret + "\n").encode())
    p.stdin.close()
    stdout = lambda: (workdir / "example.stdout").read_text()
    assert wait_until(lambda: notified(relay, before) or p.poll() is not None, 20), stdout()
    assert "status: registered" in stdout()
    with requests.Session() as s:
        for n in (1, 2):
            r = s.get(relay.dev_url("fw1", "/"), headers=relay.auth("fw1"), timeout=20)
            assert r.status_code == 200, r.text
            assert r.text == f"hello from the firmware, request {n} on this link\n", r.text
    assert "status: link opened (handed to the firmware)" in stdout()
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0
    assert "status: left" in stdout() and "stopped: 1 links opened" in stdout(), stdout()


# ---------------------------------------------------------------- static and cross builds


@pytest.mark.timeout(60)
def test_static_build_serves_pages(relay, recording_server, workdir, cleanup):
    binary = built(AGENT_OUT / "relay-agent-static")
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr, ldd
    print(f"\nrelay-agent-static: {binary.stat().st_size} bytes, stripped")
    srv = recording_server()
    p = start(relay, workdir, cleanup, [binary], "static1", srv.port, "agent-static")
    assert fetch(relay, "static1", "/static?x=1").status_code == 200
    assert "/static?x=1" in srv.paths()
    assert p.stop() == 0, p.describe()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("arch", sorted(CROSS))
def test_cross_built_agent_under_qemu_serves_pages(arch, relay, recording_server, workdir, cleanup):
    qemu, libc_root, triplet = CROSS[arch]
    binary = built(REPO / ".build-cross" / arch / "relay-agent")
    if shutil.which(qemu) is None:
        pytest.fail(f"{qemu} missing: scripts/setup.sh --cross")
    info = subprocess.run(["file", "-b", str(binary)], capture_output=True, text=True).stdout
    assert ("ARM" if arch == "armhf" else "MIPS") in info, info
    libs = REPO / ".build-cross" / arch / "sysroot" / "usr" / "lib" / triplet
    argv = [qemu, "-L", libc_root, "-E", f"LD_LIBRARY_PATH={libs}", binary]
    print(f"\n{arch} relay-agent: {binary.stat().st_size} bytes, stripped, dynamically linked")
    srv = recording_server()
    p = start(relay, workdir, cleanup, argv, f"qemu-{arch}", srv.port, f"agent-{arch}", timeout=60)
    for n in range(3):
        r = fetch(relay, f"qemu-{arch}", f"/{arch}/{n}")
        assert r.status_code == 200, r.text
        assert r.json()["path"] == f"/{arch}/{n}"
    # SIGTERM through qemu: LEAVE, then exit 0.
    assert p.stop(timeout=15) == 0, p.describe()
    assert wait_until(lambda: "device.left" in relay.stderr(), 5), relay.stderr()[-2000:]


# ---------------------------------------------------------------- packaging


def test_openwrt_recipe_and_init_script():
    pkg = REPO / "packaging" / "openwrt" / "relay-agent"
    mk = (pkg / "Makefile").read_text()
    for needle in ("include $(TOPDIR)/rules.mk", "PKG_NAME:=relay-agent", "include $(INCLUDE_DIR)/package.mk",
                   "define Package/relay-agent", "DEPENDS:=+libevent2-core +libopenssl", "define Build/Compile",
                   "agent-bin", "define Package/relay-agent/install", "$(eval $(call BuildPackage,relay-agent))"):
        assert needle in mk, needle
    init = pkg / "files" / "relay-agent.init"
    assert os.access(init, os.X_OK)
    r = subprocess.run(["sh", "-n", str(init)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = init.read_text()
    for needle in ("USE_PROCD=1", "config_load relay-agent", "config_get", "procd_set_param command",
                   "procd_set_param respawn", "procd_add_reload_trigger", "HUP"):
        assert needle in text, needle
    conf = (pkg / "files" / "relay-agent.config").read_text()
    assert "config agent" in conf and "option key_file" in conf


def test_init_script_writes_a_config_relay_agent_accepts(workdir):
    """The YAML the init script writes from UCI options is read by relay-agent (a quote and a
    backslash in a value survive); OpenWrt's config_get is stood in for."""
    init = (REPO / "packaging" / "openwrt" / "relay-agent" / "files" / "relay-agent.init").read_text()
    body = init.split("yaml_line() {", 1)[1].split("start_instance() {", 1)[0]
    key = workdir / "k"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    script = ("config_get() { eval \"$1=\\${UCI_$3:-$4}\"; }\nRUN_DIR=" + str(workdir) + "\n"
              "yaml_line() {" + body + "write_config main\n")
    env = dict(os.environ, UCI_relay="127.0.0.1:9", UCI_id="gw-1", UCI_key_file=str(key),
               UCI_forward="127.0.0.1:9", UCI_tls_name='we"ird\\name')
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=10)
    assert r.returncode == 0, r.stderr
    written = (workdir / "main.yaml").read_text()
    assert 'tls-name: "we\\"ird\\\\name"' in written, written
    # relay-agent takes it: the first thing it would do is talk to 127.0.0.1:9; stop it there.
    p = subprocess.Popen([str(relay_agent_bin()), "--config", str(workdir / "main.yaml")],
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(1.0)
    alive = p.poll() is None
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=10)
    assert alive and p.returncode == 0, err
    assert "agent.start" in err and "device=gw-1" in err, err


def test_systemd_unit_verifies_and_is_hardened(workdir):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    text = (REPO / "packaging" / "systemd" / "relay-agent.service").read_text()
    assert "Type=simple" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text
    # verify wants ExecStart's binary on this machine: the one make agent built
    unit = workdir / "relay-agent.service"
    unit.write_text(text.replace("ExecStart=/usr/bin/relay-agent ", f"ExecStart={relay_agent_bin()} "))
    env = dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60, env=env, stdin=subprocess.DEVNULL)
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    assert r.returncode == 0 and not lines, "\n".join(lines)
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", "--threshold=30", str(unit)],
                       capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, [l for l in r.stdout.splitlines() if "Overall exposure" in l] or r.stderr
