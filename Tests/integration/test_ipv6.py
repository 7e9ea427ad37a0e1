"""IPv6: relay on [::1] for HTTP, UDP and TCP; agent and fake device over ::1."""

import socket

import pytest
import requests

from helpers import answer_wake, run_bg

T = (5, 30)


def v6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not v6_available(), reason="::1 cannot be bound here")


@pytest.fixture
def relay6(relay_factory):
    return relay_factory("--wake-timeout", "5s", host="::1")


def test_ipv6_end_to_end_with_agent(relay6, static_server, agent_factory):
    root, port, _ = static_server()
    (root / "v6.txt").write_bytes(b"over ipv6\n")
    agent_factory(relay6, "six1", port)
    assert relay6.base.startswith("http://[::1]:")
    r = requests.get(relay6.dev_url("six1", "/v6.txt"), headers=relay6.auth("six1"), timeout=T)
    assert r.status_code == 200 and r.content == b"over ipv6\n"
    h = relay6.auth("six1")
    h["Host"] = f"six1.localhost:{relay6.http_port}"
    r = requests.get(relay6.url("/v6.txt"), headers=h, timeout=T)
    assert r.status_code == 200 and r.content == b"over ipv6\n"


def test_ipv6_fake_device(relay6, fake_devices):
    dev = relay6.fake_device("six2")
    fake_devices.append(dev)
    assert dev.info.callback_port == relay6.tcp_port
    dev.notify_a()
    fut = run_bg(requests.get, relay6.dev_url("six2", "/q"), headers=relay6.auth("six2"), timeout=T)
    cr = dev.wait_connect_request(0, timeout=5)
    assert cr.src == ("::1", relay6.udp_port)
    answer_wake(dev, cr)
    r = fut.result(30)
    assert r.status_code == 200 and r.text == "fake-device GET /q"
