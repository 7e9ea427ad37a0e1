#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into Tests/fuzz/corpus/<target>/ (small files).

Run by `make fuzz` before fuzzing; the output is deterministic, so the committed corpus and a
regenerated one are the same. Keys and token key match Tests/fuzz/fuzz_util.h.
"""
import hashlib
import hmac
import struct
import sys
from pathlib import Path

KEY_A = bytes(range(1, 17))
KEY_B = bytes(range(16, 0, -1))


def dgram(t, dev, body, key=KEY_A, tag=None, version=2):
    d = bytes([0x52, version, t, len(dev)]) + dev.encode() + body
    return d + (tag if tag is not None else hmac.new(key, d, hashlib.sha256).digest()[:16])


def rec(ctl, data):
    return bytes([ctl, len(data)]) + data


def dgram_seeds():
    pr = dgram(1, "cam-1", b"nonce-08" + struct.pack(">Q", 1) + bytes(8))  # nonce || counter || zeros
    pr_later = dgram(1, "cam-1", b"nonce-08" + struct.pack(">Q", 9) + bytes(8))
    na = dgram(3, "cam-1", struct.pack(">IQ", 0, 1))
    nb = dgram(4, "cam-1", struct.pack(">IQ", 0, 2))
    nb_b = dgram(4, "b", struct.pack(">IQ", 0, 5), KEY_B)
    long_id = "a" * 63
    return {
        "period": rec(1, pr),
        "notify_a": rec(3, na),
        "notify_a_then_b_same_anchor": rec(3, na) + rec(3, nb) + rec(0, nb),
        "replay": rec(3, na) + rec(3, na),
        "stale_epoch": rec(1, na),
        "nat_remap": rec(3, na) + rec(3 | 8, dgram(3, "cam-1", struct.pack(">IQ", 0, 3))) + rec(3 | 64, nb),
        "two_devices": rec(3, na) + rec(3, nb_b),
        "unknown_long_id": rec(1, dgram(3, long_id, struct.pack(">IQ", 0, 1))),
        "relay_types": rec(1, dgram(2, "cam-1", bytes(24))) + rec(1, dgram(5, "cam-1", bytes(12))) +
        rec(1, dgram(6, "cam-1", bytes(36))),
        "truncated": rec(4 | 3, na) + rec(3, na[:-1]) + rec(3, na + b"x"),
        "garbage": rec(0, b"\x52\x01\x03\x00") + rec(0, b"GET / HTTP/1.1\r\n\r\n"),
        # Replays: a NOTIFY_B from the anchor replayed from elsewhere, a captured period request
        # from spoofed sources, a stale-epoch notify again, a forged high counter before a real one.
        "replay_b_elsewhere": rec(3, na) + rec(3, nb) + rec(0 | 8, nb) + rec(0 | 64, nb),
        "replay_period": rec(1, pr) + rec(0 | 8, pr) + rec(0 | 128, pr) + rec(3, na) + rec(1, pr_later),
        "replay_stale_epoch": rec(1, na) + rec(0, na) + rec(0 | 16, na),
        "leave_then_notify": rec(3, na) + rec(3, dgram(8, "cam-1", struct.pack(">IQ", 0, 4))) + rec(3, nb) +
        rec(3 | 8, dgram(8, "cam-1", struct.pack(">IQ", 0, 4))),
        "old_version": rec(0, dgram(3, "cam-1", struct.pack(">IQ", 0, 1), version=1)) +
        rec(0, dgram(1, "b", b"nonce-08" + bytes(16), KEY_B, version=1)),
        "reject_unknown": rec(0, dgram(1, "nobody", b"nonce-08" + struct.pack(">Q", 1) + bytes(8))) +
        rec(0, dgram(1, "cam-1", b"nonce-08" + struct.pack(">Q", 1) + bytes(8), tag=bytes(16))),
        "forged_high_counter": rec(2, dgram(3, "cam-1", struct.pack(">IQ", 0, 2**64 - 1), tag=bytes(16))) + rec(3, na),
    }


def token_seeds():
    tok = b"cam-1.2000000000.0102030405060708.AAAAAAAAAAAAAAAAAAAAAA"
    genuine = bytes([1, 5]) + b"cam-1" + struct.pack(">Q", 2000000000) + bytes(range(8)) + \
        struct.pack(">Q", 1700000000) + b"\x10\x01"
    return {
        "text": b"\x00" + tok,
        "text_other_device": b"\x00" + tok.replace(b"cam-1", b"b"),
        "text_short": b"\x00cam-1.1.2.3",
        "text_long_expiry": b"\x00cam-1.99999999999999999999.0102030405060708.AAAAAAAAAAAAAAAAAAAAAA",
        "genuine": genuine,
        "genuine_expired": bytes([1, 1]) + b"b" + struct.pack(">Q", 5) + bytes(8) + struct.pack(">Q", 6) + b"\x03\x20",
    }


def flow(direction, mask, seed, stream):
    return bytes([direction, mask]) + struct.pack(">I", seed) + stream


def flow_seeds():
    return {
        "get": flow(0, 0, 1, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        "post_cl": flow(0, 0, 7, b"POST /up HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\n\r\n"),
        "post_chunked": flow(0, 0, 99, b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
        "chunk_lenient": flow(0, 0, 5, b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"5;x\nhello\r\n5\r\nhelloXX0\r\nT: 1\n\r\n"),
        "obs_fold": flow(0, 0, 9, b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n y\r\n\r\n"),
        "upgrade": flow(0, 0, 3, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello"),
        "leading_crlf": flow(0, 0, 5, b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
        "resp_cl": flow(1, 0, 1, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 204 No Content\r\n\r\n"),
        "resp_chunked": flow(1, 0, 11, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n"),
        "resp_head": flow(1, 1, 13, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"),
        "resp_continue": flow(1, 0, 17, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        "resp_eof": flow(1, 0, 19, b"HTTP/1.0 200 OK\r\n\r\nbody until close"),
        "resp_101": flow(1, 0, 23, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00"),
        "resp_304": flow(1, 0, 29, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),
    }


SEP = b"\x00\x01"


def front(flags, *chunks):
    return bytes([flags]) + SEP.join(chunks)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


def front_seeds():
    auth = b"Authorization: Bearer @T\r\n"
    return {
        "path_bearer": front(0, b"GET /d/cam-1/x?y=1 HTTP/1.1\r\nHost: relay\r\n" + auth + b"\r\n", OK),
        "host_bearer": front(0, b"GET /p HTTP/1.1\r\nHost: cam-1.localhost:8080\r\n" + auth + b"\r\n", OK),
        "query_token": front(0, b"GET /d/cam-1/a?x=1&relay_token=@T&z HTTP/1.1\r\nHost: h\r\n\r\n"),
        "cookie_token": front(0, b"GET /d/cam-1/ HTTP/1.1\r\nCookie: a=1; relay_token=@T; b=2\r\n\r\n", OK),
        "cookie_only": front(0, b"GET / HTTP/1.1\r\nHost: cam-1.localhost\r\nCookie: relay_token=@T\r\n\r\n", OK),
        "forbidden": front(0, b"GET /d/cam-1/ HTTP/1.1\r\nAuthorization: Bearer @B\r\n\r\n"),
        "unknown": front(0, b"GET /d/nope/ HTTP/1.1\r\n\r\n"),
        "no_device": front(0, b"GET / HTTP/1.1\r\nHost: other\r\n\r\n"),
        "healthz": front(0, b"GET /healthz HTTP/1.1\r\n\r\n"),
        "garbage": front(0, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"),
        "pipelined": front(0, b"GET /d/cam-1/1 HTTP/1.1\r\n" + auth + b"\r\nHEAD /d/cam-1/2 HTTP/1.1\r\n" + auth +
                           b"\r\n", OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        "post_chunked": front(2, b"POST /d/cam-1/up HTTP/1.1\r\n" + auth +
                              b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", OK),
        "websocket": front(0, b"GET /d/cam-1/ws HTTP/1.1\r\n" + auth + b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                           b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", b"\x81\x02hi", b"\x81\x02yo"),
        "reuse": front(8, b"GET /d/cam-1/ HTTP/1.1\r\n" + auth + b"\r\n", OK,
                       b"GET /d/cam-1/again HTTP/1.1\r\n" + auth + b"X-Relay-Session: @S\r\n\r\n", OK),
        "other_device_next": front(0, b"GET /d/cam-1/ HTTP/1.1\r\n" + auth + b"\r\n", OK,
                                   b"GET /d/b/ HTTP/1.1\r\nAuthorization: Bearer @B\r\n\r\n", OK),
        "device_closes_http10": front(4, b"GET /d/cam-1/ HTTP/1.1\r\n" + auth + b"\r\n", b"HTTP/1.0 200 OK\r\n\r\nbye"),
        "fuzzed_hello": front(1, b"GET /d/cam-1/ HTTP/1.1\r\n" + auth + b"\r\n", b"RLY1\x05cam-1@S@P" + OK),
        "bad_hello": front(1, b"GET /d/cam-1/ HTTP/1.1\r\n" + auth + b"\r\n", b"RLY1\x05cam-1" + bytes(48)),
        "timers": front(0x30, b"GET /d/cam-1/ HTTP/1.1\r\n" + auth + b"\r\n", OK),
        "head_timeout": front(0x20, b"GET /d/cam-1/ HT"),
        # A body large enough to be spliced (splice.c) that the device cuts short, and one the
        # terminal walks away from.
        "splice_device_cut": front(4, b"GET /d/cam-1/big HTTP/1.1\r\n" + auth + b"\r\n",
                                   b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + bytes(100), b"", bytes(3000)),
        "splice_terminal_leaves": front(2, b"GET /d/cam-1/big HTTP/1.1\r\n" + auth + b"\r\n",
                                        b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\nabc", b"GET /d/cam-1/next HTTP/1.1\r\n\r\n",
                                        bytes(5000)),
        # Heads two parsers could read differently (refused with 400), the absolute form
        # (routed by its authority), an Upgrade the device refuses (the next head is checked
        # again) and one it takes, credentials in every spelling, Connection: close.
        "obs_fold": front(0, b"GET /d/cam-1/ HTTP/1.1\r\n" + auth + b"X-A: 1\r\n GET /d/cam-1/x HTTP/1.1\r\n\r\n", OK),
        "two_hosts": front(0, b"GET / HTTP/1.1\r\nHost: cam-1.localhost\r\nHost: b.localhost\r\n" + auth + b"\r\n", OK),
        "absolute_form": front(0, b"GET http://cam-1.localhost:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n" + auth + b"\r\n",
                               OK),
        "upgrade_refused": front(0, b"GET /d/cam-1/ws HTTP/1.1\r\n" + auth + b"Upgrade: foo\r\nConnection: Upgrade\r\n\r\n"
                                 b"GET /d/cam-1/secret HTTP/1.1\r\n\r\n", OK, b"GET /d/cam-1/more HTTP/1.1\r\n\r\n"),
        "upgrade_body": front(0, b"POST /d/cam-1/ws HTTP/1.1\r\n" + auth + b"Upgrade: foo\r\nConnection: Upgrade\r\n"
                              b"Content-Length: 2\r\n\r\nhiEARLY", b"HTTP/1.1 101 Switching Protocols\r\n\r\nback"),
        "cl_and_te": front(0, b"POST /d/cam-1/ HTTP/1.1\r\n" + auth + b"Content-Length: 5\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", OK),
        "all_credentials": front(0, b"GET /d/cam-1/p?relay_token=@T&a=1&relay%5Ftoken=x HTTP/1.1\r\n" + auth +
                                 b"Cookie: relay_token=@T; k=v\r\nCookie: relay_token=y\r\nX-Forwarded-Prefix: /e\r\n"
                                 b"Forwarded: for=1.2.3.4\r\n\r\n", OK),
        "connection_close": front(0, b"GET /d/cam-1/ HTTP/1.1\r\n" + auth + b"Connection: close\r\n\r\n"
                                  b"GET /d/cam-1/after HTTP/1.1\r\n" + auth + b"\r\n", OK, OK),
        "device_says_close": front(0, b"GET /d/cam-1/ HTTP/1.1\r\n" + auth + b"\r\n",
                                   b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
        "open_redirect": front(0, b"GET //evil.example/x?relay_token=@T HTTP/1.1\r\nHost: cam-1.localhost\r\n\r\n"),
        "chunk_lf_in_ext": front(0, b"POST /d/cam-1/ HTTP/1.1\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\n"
                                 b"5;x\nhello\r\n0\r\n\r\nGET /d/cam-1/s HTTP/1.1\r\n\r\n", OK),
        "second_head_slow": front(0x20, b"GET /d/cam-1/ HTTP/1.1\r\n" + auth + b"\r\nGET /d/cam-1/2 HT", OK),
    }


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "corpus")
    for target, seeds in (("fuzz_dgram", dgram_seeds()), ("fuzz_token", token_seeds()), ("fuzz_flow", flow_seeds()),
                          ("fuzz_front", front_seeds())):
        d = out / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            p = d / name
            if not p.exists() or p.read_bytes() != data:
                p.write_bytes(data)


if __name__ == "__main__":
    main()
