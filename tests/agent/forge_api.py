#!/usr/bin/env python3
"""A stand-in for a forge's commits API, as GitHub answers it, for tests of source.poll_url
(GitHub itself cannot be reached from a test).

Usage: forge_api.py BARE_REPO PORT_FILE

Serves GET /repos/OWNER/REPO/commits/REF on 127.0.0.1 (a port of its own, written to
PORT_FILE): the commit REF points to in BARE_REPO, as GitHub does it:
- with "Accept: application/vnd.github.sha", the bare commit id as text; otherwise a JSON
  object with "sha";
- a strong ETag computed from the body, and "304 Not Modified" (no body) when the request's
  If-None-Match names it; no Last-Modified;
- HTTP/1.1 keep-alive.
Every request is logged to stdout as "METHOD PATH STATUS", one per line.
"""
import hashlib
import http.server
import json
import subprocess
import sys


class Api(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        parts = self.path.split("/")
        if len(parts) != 6 or parts[1] != "repos" or parts[4] != "commits":
            return self.answer(404, b'{"message":"Not Found"}', "application/json")
        ref = parts[5]
        sha = subprocess.run(["git", "--git-dir", self.server.repo, "rev-parse", "--verify",
                              "-q", ref], capture_output=True, text=True).stdout.strip()
        if not sha:
            return self.answer(422, b'{"message":"No commit found"}', "application/json")
        if "application/vnd.github.sha" in self.headers.get("Accept", ""):
            body, kind = sha.encode(), "application/vnd.github.sha; charset=utf-8"
        else:
            body, kind = json.dumps({"sha": sha}).encode(), "application/json; charset=utf-8"
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if self.headers.get("If-None-Match") == etag:
            return self.answer(304, b"", None, etag)
        self.answer(200, body, kind, etag)

    def answer(self, status, body, kind, etag=None):
        self.send_response(status)
        if kind:
            self.send_header("Content-Type", kind)
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)
        print(self.command, self.path, status, flush=True)

    def log_message(self, *args):
        pass


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    server.repo = sys.argv[1]
    with open(sys.argv[2] + ".tmp", "w") as port:
        port.write(str(server.server_address[1]))
    import os
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    server.serve_forever()


if __name__ == "__main__":
    main()
