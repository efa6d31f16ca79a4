#!/usr/bin/env python3
"""An HTTP feed server for the tests (Python's http.server: a real HTTP/1.1 stack).

    http_feed.py PORT [CERT KEY]     plain HTTP, or HTTPS with the given PEM files

    GET /feed.txt   the current document, with ETag; If-None-Match on it gets 304
    GET /bump       the next version of the document
    GET /broken     500
    GET /slow       waits 3 s, then 200
    GET /moved      301 to /feed.txt
"""

import http.server
import ssl
import sys
import threading
import time

version = 1
lock = threading.Lock()


def document():
    return f"MPEC 2026-W{version:02d}: minor planet circular, version {version}\n".encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        global version
        if self.path == "/feed.txt":
            with lock:
                etag, body = f'"v{version}"', document()
            if self.headers.get("If-None-Match") == etag:
                self.reply(304, headers=[("ETag", etag)])
            else:
                self.reply(200, body, [("ETag", etag), ("Content-Type", "text/plain; charset=utf-8")])
        elif self.path == "/bump":
            with lock:
                version += 1
            self.reply(200, b"bumped\n")
        elif self.path == "/broken":
            self.reply(500, b"internal error\n")
        elif self.path == "/slow":
            time.sleep(3)
            self.reply(200, b"late\n")
        elif self.path == "/moved":
            self.reply(301, headers=[("Location", "/feed.txt")])
        else:
            self.reply(404, b"no such feed\n")


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    if len(sys.argv) > 3:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
