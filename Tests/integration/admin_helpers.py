"""Helpers for the admin API tests: the running relay's admin endpoint (from <data>/admin.json)
and an operator key made with `relay admin-key create`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests


def endpoint(relay, timeout: float = 10.0) -> dict:
    """The admin.json the relay wrote (it exists before /healthz answers)."""
    path = Path(relay.data) / "admin.json"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.05)
    pytest.fail(f"no {path}\n{relay.proc.describe() if relay.proc else ''}")


class Admin:
    """Requests to one relay's admin API with a key made by `relay admin-key create`."""

    def __init__(self, relay, key: str | None = None):
        self.relay = relay
        self.info = endpoint(relay)
        self.url = self.info["url"]
        if key is None:
            r = relay.cli("admin-key", "create", "--name", "tests")
            assert r.returncode == 0, r.stderr
            key = r.stdout.strip()
        self.key = key
        self.s = requests.Session()

    def headers(self, key=None) -> dict:
        return {"Authorization": f"Bearer {self.key if key is None else key}"}

    def req(self, method: str, path: str, key=None, **kw) -> requests.Response:
        kw.setdefault("timeout", 10)
        headers = dict(self.headers(key) if key is not False else {}, **kw.pop("headers", {}))
        return self.s.request(method, self.url + path, headers=headers, **kw)

    def get(self, path: str, **kw):
        return self.req("GET", path, **kw)

    def post(self, path: str, **kw):
        return self.req("POST", path, **kw)

    def delete(self, path: str, **kw):
        return self.req("DELETE", path, **kw)

    def ok(self, method: str, path: str, status: int = 200, **kw) -> dict:
        r = self.req(method, path, **kw)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def device(self, device_id: str) -> dict:
        return self.ok("GET", f"/api/v1/devices/{device_id}")

    def wait_device(self, device_id: str, pred, timeout: float = 10.0) -> dict:
        end = time.monotonic() + timeout
        d = None
        while time.monotonic() < end:
            d = self.device(device_id)
            if pred(d):
                return d
            time.sleep(0.05)
        pytest.fail(f"device {device_id}: condition not met within {timeout}s: {d}")
