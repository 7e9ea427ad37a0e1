"""TLS on both legs: HTTPS for terminals (SNI, wildcard, redirect from plain HTTP), TLS
device callbacks verified by the agent, device certificates checked by the relay, and
certificates reloaded on SIGHUP without dropping live sessions. The certificates are made
here with the `cryptography` package; curl and Python's ssl module are the terminals."""

from __future__ import annotations

import datetime
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import Proc, agent_command, both_agents, free_port, relay_bin
from helpers import wait_until

DOMAIN = "relay.test"
T = 30


# ---------------------------------------------------------------- certificates


class CA:
    def __init__(self, workdir: Path, name: str):
        self.dir = workdir
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.path = workdir / f"{name}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, cn: str, dns=(), ips=(), days: int = 30, expired: bool = False) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        start, end = (now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)) if expired else \
            (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days))
        import ipaddress
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(start).not_valid_after(end))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.dir / f"{stem}.pem", self.dir / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        return cert_path, key_path


@pytest.fixture
def pki(workdir):
    ca = CA(workdir, "relay-ca")
    cert, key = ca.issue("relay", DOMAIN, dns=[DOMAIN, f"*.{DOMAIN}", "localhost"], ips=["127.0.0.1"])
    return ca, cert, key


def tls_relay(relay_factory, pki, *extra):
    ca, cert, key = pki
    https = free_port()
    relay = relay_factory("--https", f"127.0.0.1:{https}", "--tls-cert", cert, "--tls-key", key,
                          "--domain", DOMAIN, *extra)
    relay.https_port = https
    return relay


def curl(relay, url_path: str, device: str = None, *args, token: str = None, ca: Path = None) -> subprocess.CompletedProcess:
    """curl against the HTTPS port, resolving <device>.relay.test to loopback."""
    host = f"{device}.{DOMAIN}" if device else DOMAIN
    cmd = ["curl", "-sS", "--max-time", "20", "--resolve", f"{host}:{relay.https_port}:127.0.0.1",
           "-w", "\n%{http_code}"]
    if ca:
        cmd += ["--cacert", str(ca)]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    cmd += list(args) + [f"https://{host}:{relay.https_port}{url_path}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def status_and_body(r: subprocess.CompletedProcess) -> tuple[int, str]:
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def read_response(sock) -> bytes:
    """One whole response with a Content-Length body from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def start_agent(relay, workdir, cleanup, device_id: str, forward_port: int, *tls_args, impl: str = "swift") -> Proc:
    secret = relay.devices.get(device_id) or relay.add_device(device_id)
    p = Proc(agent_command(impl) + ["--relay", f"127.0.0.1:{relay.udp_port}", "--id", device_id, "--key", secret,
              "--forward", f"127.0.0.1:{forward_port}", *[str(a) for a in tls_args]], workdir, f"agent-{device_id}")
    cleanup.append(p.stop)
    assert wait_until(lambda: "agent.registered" in p.stderr() or not p.alive(), 15), p.describe()
    assert p.alive(), p.describe()
    return p


# ---------------------------------------------------------------- terminals


@both_agents
@pytest.mark.timeout(90)
def test_https_both_legs_end_to_end(relay_factory, pki, recording_server, workdir, cleanup, agent_impl):
    ca = pki[0]
    relay = tls_relay(relay_factory, pki)
    srv = recording_server()
    start_agent(relay, workdir, cleanup, "cam1", srv.port, "--ca", ca.path, "--tls-name", DOMAIN, impl=agent_impl)
    tok = relay.token("cam1")
    code, body = status_and_body(curl(relay, "/hello?x=1", "cam1", token=tok, ca=ca.path))
    assert code == 200, body
    seen = [r for r in srv.requests if r["path"] == "/hello?x=1"]
    assert seen, srv.paths()
    headers = dict((k.lower(), v) for k, v in seen[-1]["headers"])
    assert headers.get("x-forwarded-proto") == "https"
    # path routing over HTTPS too
    code, _ = status_and_body(curl(relay, "/d/cam1/p", None, token=tok, ca=ca.path))
    assert code == 200
    m = relay.metrics()
    assert m("relay_tls_handshakes_total", leg="terminal", outcome="ok") >= 2
    assert m("relay_tls_handshakes_total", leg="device", outcome="ok") >= 2


def test_terminal_without_the_ca_refuses_the_relay(relay_factory, pki):
    relay = tls_relay(relay_factory, pki)
    r = curl(relay, "/", "cam1")  # no --cacert: the relay's test CA is unknown to curl
    assert r.returncode == 60, r.stderr  # certificate problem


def test_plain_port_redirects_to_https_keeping_health(relay_factory, pki):
    relay = tls_relay(relay_factory, pki)
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "-H",
                        f"Host: cam1.{DOMAIN}:{relay.http_port}", f"http://127.0.0.1:{relay.http_port}/a/b?c=d"],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout == f"308 https://cam1.{DOMAIN}:{relay.https_port}/a/b?c=d", r.stdout
    # load balancers keep probing the plain port
    assert relay.healthy()


def test_sni_picks_the_certificate_by_name(relay_factory, pki, workdir):
    ca = pki[0]
    other_cert, other_key = ca.issue("other", "other.example", dns=["other.example"])
    relay = tls_relay(relay_factory, pki, "--tls-cert", other_cert, "--tls-key", other_key)

    def served_names(server_name):
        ctx = ssl.create_default_context(cafile=str(ca.path))
        ctx.check_hostname = False
        with socket.create_connection(("127.0.0.1", relay.https_port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname=server_name) as t:
                cert = t.getpeercert()
        return {v for k, v in cert.get("subjectAltName", ()) if k == "DNS"}

    assert "other.example" in served_names("other.example")
    assert f"*.{DOMAIN}" in served_names(f"cam7.{DOMAIN}")  # wildcard
    assert f"*.{DOMAIN}" in served_names("unknown.example")  # no match: the first certificate


def test_bad_tls_handshakes_are_counted(relay_factory, pki):
    relay = tls_relay(relay_factory, pki)
    with socket.create_connection(("127.0.0.1", relay.https_port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP on the TLS port
        s.settimeout(5)
        try:
            s.recv(100)
        except OSError:
            pass
    assert wait_until(lambda: relay.metrics()("relay_tls_handshakes_total", leg="terminal", outcome="failed") >= 1, 5)
    assert relay.healthy()


# ---------------------------------------------------------------- the device leg


@both_agents
@pytest.mark.timeout(90)
def test_agent_refuses_a_relay_it_cannot_verify(relay_factory, pki, recording_server, workdir, cleanup, agent_impl):
    relay = tls_relay(relay_factory, pki, "--wake-timeout", "2s")
    other = CA(workdir, "other-ca")
    srv = recording_server()
    agent = start_agent(relay, workdir, cleanup, "cam2", srv.port, "--ca", other.path, "--tls-name", DOMAIN,
                        impl=agent_impl)
    code, body = status_and_body(curl(relay, "/", "cam2", token=relay.token("cam2"), ca=pki[0].path))
    assert code == 504, body  # the agent never completed a callback it could not verify
    assert not srv.requests
    agent.stop()
    assert "links_failed=" in agent.stderr() and "links_opened=0" in agent.stderr(), agent.stderr()


@both_agents
@pytest.mark.timeout(120)
def test_device_certificates(relay_factory, pki, recording_server, workdir, cleanup, agent_impl):
    device_ca = CA(workdir, "device-ca")
    rogue_ca = CA(workdir, "rogue-ca")
    relay = tls_relay(relay_factory, pki, "--device-ca", device_ca.path, "--wake-timeout", "3s")
    srv = recording_server()
    cases = {
        "dev-ok": device_ca.issue("dev-ok", "dev-ok"),
        "dev-other": device_ca.issue("dev-other", "someone-else"),
        "dev-rogue": rogue_ca.issue("dev-rogue", "dev-rogue"),
        "dev-expired": device_ca.issue("dev-expired", "dev-expired", expired=True),
        "dev-none": None,
    }
    expect = {
        "dev-ok": (200, ""),
        "dev-other": (502, "device dev-other was refused: its certificate is for another device"),
        "dev-rogue": (502, "device dev-rogue was refused: unable to verify the first certificate"),
        "dev-expired": (502, "device dev-expired was refused: certificate has expired"),
        "dev-none": (502, "device dev-none was refused: it presented no certificate"),
    }
    for dev, files in cases.items():
        extra = ["--ca", pki[0].path, "--tls-name", DOMAIN]
        if files:
            extra += ["--tls-cert", files[0], "--tls-key", files[1]]
        start_agent(relay, workdir, cleanup, dev, srv.port, *extra, impl=agent_impl)
    for dev, (want, text) in expect.items():
        t0 = time.monotonic()
        code, body = status_and_body(curl(relay, "/", dev, token=relay.token(dev), ca=pki[0].path))
        assert code == want, (dev, code, body)
        assert text in body, (dev, body)
        assert time.monotonic() - t0 < 2.5, f"{dev}: answered at once, not at the wake timeout"
    assert relay.metrics()("relay_device_certificates_refused_total") == 4


# ---------------------------------------------------------------- reload


@pytest.mark.timeout(90)
def test_sighup_reloads_certificates_without_dropping_sessions(relay_factory, pki, recording_server, workdir,
                                                               cleanup):
    ca, cert, key = pki
    relay = tls_relay(relay_factory, pki, "--idle-link", "30s")
    srv = recording_server()
    start_agent(relay, workdir, cleanup, "cam3", srv.port, "--ca", ca.path, "--tls-name", DOMAIN)
    tok = relay.token("cam3")
    ctx = ssl.create_default_context(cafile=str(ca.path))
    live = ctx.wrap_socket(socket.create_connection(("127.0.0.1", relay.https_port), timeout=10),
                           server_hostname=f"cam3.{DOMAIN}")
    request = f"GET /live HTTP/1.1\r\nHost: cam3.{DOMAIN}\r\nAuthorization: Bearer {tok}\r\n\r\n".encode()
    live.sendall(request)
    assert read_response(live).startswith(b"HTTP/1.1 200")
    old_serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number

    # renew: same file names, new certificate
    ca.issue("relay", DOMAIN, dns=[DOMAIN, f"*.{DOMAIN}"], ips=["127.0.0.1"])
    new_serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    relay.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "config.reloaded" in relay.stderr(), 5), relay.stderr()

    def served_serial():
        with socket.create_connection(("127.0.0.1", relay.https_port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname=f"cam3.{DOMAIN}") as t:
                return x509.load_der_x509_certificate(t.getpeercert(binary_form=True)).serial_number

    assert wait_until(lambda: served_serial() == new_serial, 5), "new handshakes still get the old certificate"
    assert new_serial != old_serial
    # the connection opened before the reload goes on
    live.sendall(request.replace(b"/live", b"/still"))
    assert read_response(live).startswith(b"HTTP/1.1 200")
    live.close()

    # a broken certificate file on reload keeps the running ones
    cert.write_text("not a certificate\n")
    relay.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "config.reload.tls_failed" in relay.stderr(), 5), relay.stderr()
    assert served_serial() == new_serial


def test_tls_configuration_errors_name_the_flag(relay_factory, pki, workdir):
    ca, cert, key = pki
    from conftest import run_cli
    r = run_cli(["check-config", "--tls-cert", cert])
    assert r.returncode != 0 and "--tls-key" in r.stderr, r.stderr
    r = run_cli(["check-config", "--https", "127.0.0.1:0"])
    assert r.returncode != 0 and "--https" in r.stderr and "--tls-cert" in r.stderr, r.stderr
    (workdir / "bad.pem").write_text("nope\n")
    r = run_cli(["serve", "--data", workdir / "d", "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--tcp",
                 "127.0.0.1:0", "--tls-cert", workdir / "bad.pem", "--tls-key", key], timeout=30)
    assert r.returncode != 0 and "bad.pem" in r.stderr, r.stderr


@pytest.mark.timeout(90)
def test_make_test_certs_script_gives_a_working_setup(relay_factory, recording_server, workdir, cleanup):
    """scripts/make-test-certs.sh, as the README tells a user to try TLS, end to end."""
    certs = workdir / "tls"
    script = Path(__file__).resolve().parents[2] / "scripts" / "make-test-certs.sh"
    r = subprocess.run(["bash", str(script), str(certs), DOMAIN, "cam9"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert oct((certs / "relay.key").stat().st_mode & 0o777) == "0o600"
    https = free_port()
    relay = relay_factory("--https", f"127.0.0.1:{https}", "--tls-cert", certs / "relay.pem", "--tls-key",
                          certs / "relay.key", "--device-ca", certs / "device-ca.pem", "--domain", DOMAIN)
    relay.https_port = https
    srv = recording_server()
    start_agent(relay, workdir, cleanup, "cam9", srv.port, "--ca", certs / "ca.pem", "--tls-cert", certs / "cam9.pem",
                "--tls-key", certs / "cam9.key")  # --tls-name defaults to the host of --relay: 127.0.0.1
    code, body = status_and_body(curl(relay, "/via-script", "cam9", token=relay.token("cam9"), ca=certs / "ca.pem"))
    assert code == 200, body
