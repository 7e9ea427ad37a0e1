"""The real agents' web servers for the cluster test: one tiny HTTP server per device, each
answering every GET with "page of <id> <path>".

    ip netns exec NS python3 webpages.py PORT=ID [PORT=ID ...]

Prints "serving N" once every port listens; runs until SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def handler_for(device_id: str):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = f"page of {device_id} {self.path}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    return H


def main():
    servers = []
    for arg in sys.argv[1:]:
        port, device_id = arg.split("=", 1)
        srv = ThreadingHTTPServer(("127.0.0.1", int(port)), handler_for(device_id))
        srv.daemon_threads = True
        servers.append(srv)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print(f"serving {len(servers)}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait(900)
    for s in servers:
        s.shutdown()


if __name__ == "__main__":
    main()
