"""The relay's own answers as a person reads them: a page for a browser (Accept: text/html),
the plain line for everyone else, WWW-Authenticate on 401, and nothing on a page that tells
someone without a valid token whether a device exists."""

import re

import requests

from test_demo_browser import SHOTS, find_chromium, run_chromium

T = (5, 30)
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def get(relay, path, headers=None):
    return requests.get(relay.url(path), headers=headers or {}, timeout=T)


def test_a_browser_gets_a_page_and_curl_the_line(relay, fake_devices):
    dev = relay.fake_device("page1")  # provisioned, never notified: offline
    fake_devices.append(dev)
    auth = relay.auth("page1")
    plain = get(relay, "/d/page1/", auth)
    page = get(relay, "/d/page1/", {**auth, **BROWSER})
    assert plain.status_code == page.status_code == 503
    assert plain.headers["Content-Type"].startswith("text/plain")
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<title>503 Service Unavailable</title>" in page.text
    assert plain.text.strip() in page.text, "the page says what the line says"
    assert "It answers again once it is switched on" in page.text
    assert "<script" not in page.text and "http" not in page.text.split("<main>")[1], "self-contained, no links out"


def test_401_names_the_scheme_and_pages_do_not_tell_devices_apart(relay, fake_devices):
    relay.add_device("known1")
    for headers in ({}, BROWSER):
        known = get(relay, "/d/known1/", headers)
        unknown = get(relay, "/d/nosuch1/", headers)
        assert known.status_code == unknown.status_code == 401
        assert known.headers["WWW-Authenticate"] == 'Bearer realm="relay"'
        assert known.text == unknown.text, "a known device must look like an unknown one"
        forged = {**headers, "Authorization": "Bearer known1.9999999999.0102030405060708.AAAAAAAAAAAAAAAAAAAAAA"}
        forged_unknown = {**headers, "Authorization": "Bearer nosuch1.9999999999.0102030405060708.AAAAAAAAAAAAAAAAAAAAAA"}
        assert get(relay, "/d/known1/", forged).text == get(relay, "/d/nosuch1/", forged_unknown).text
    page = get(relay, "/d/known1/", BROWSER)
    assert "Ask whoever gave you the link for a new one" in page.text


def test_the_page_escapes_what_it_repeats(relay):
    page = get(relay, "/d/%3Cscript%3E/", BROWSER)  # not a device ID: the relay's own 404
    assert page.status_code == 404 and page.headers["Content-Type"].startswith("text/html")
    assert "<script" not in page.text.lower()


def test_offline_page_in_chromium(relay, fake_devices):
    browser = find_chromium()
    if not browser:
        import pytest
        pytest.skip("chromium is not installed")
    dev = relay.fake_device("page2")
    fake_devices.append(dev)
    tok = relay.token("page2")
    # host routing, as a browser would open a device: the token is traded for a cookie first
    url = f"http://page2.localhost:{relay.http_port}/?relay_token={tok}"
    dom = run_chromium(browser, url, "--dump-dom")
    assert "Service Unavailable" in dom and "has not notified the relay" in dom, dom[-2000:]
    shot = SHOTS / "answer-page-503.png"
    shot.unlink(missing_ok=True)
    run_chromium(browser, url, f"--screenshot={shot}", "--window-size=900,600", "--hide-scrollbars")
    assert shot.exists() and shot.stat().st_size > 5000
    assert re.search(r"offline", dom)
