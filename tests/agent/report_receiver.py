#!/usr/bin/env python3
"""A report receiver that tether did not write: Python's http.server, as small receivers
are. It stores every report it is sent, one JSON line each ({"id", "idempotency_key",
"created_at", "cloudevent", "cloudevent_errors", "connection", "expect", "length"}), in
--store, and answers 200 in HTTP/1.0: no Content-Length, the connection closed after the
answer, and, over TLS (--cert, --key), closed without a TLS close_notify, as Python's ssl
module does when a socket is closed without unwrap(). "connection" numbers the
connections the server accepted (1, 2, ...); "expect" is the Expect header, if any.

With --http11 it speaks HTTP/1.1 instead: connections kept open between requests (each
answer with a Content-Length), `Expect: 100-continue` answered with 100 Continue (by
http.server itself). --idle-timeout SECONDS closes a kept connection idle that long.

With --refuse FILE: while FILE exists, a report whose "event" is the word in it is
answered 503 (and not stored), as a receiver whose backend chokes on one report.

With --mode, the first request (or every one) is answered as other receivers do:
  early        every request: 200 and its headers first, the body read after
  retry-after  the first: 503 with Retry-After: 1, the body read but not stored
  hang-up      the first: half of the body read, then the connection closed, no answer
  interim      every request: 103 Early Hints and 102 Processing before the 200
  chunked      every request: the 200's body chunked (with --http11)
  expect-refuse  a request with Expect: 100-continue is answered 413 at once (the body
               not read); stored as {"id": Idempotency-Key, "refused": 413, "body_sent"},
               body_sent saying whether the body came all the same within a second
  expect-417   the same with 417 Expectation Failed, as a server that does not do Expect:
               stored as {"id", "refused": 417, "body_sent"}; a request without it is
               taken
  slow         the first: the answer, "HTTP/1.0 200 \\r\\n\\r\\n", one byte a second

Usage: report_receiver.py --port PORT --store FILE [--cert PEM --key PEM] [--refuse FILE]
                          [--mode MODE] [--http11 [--idle-timeout SECONDS]]
"""
import argparse
import datetime
import http.server
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse


def cloudevent(headers) -> tuple[dict, list[str]]:
    """The CloudEvents 1.0 attributes of a binary-mode HTTP request (ce-* headers and
    Content-Type), and what breaks the spec's rules for them: the required id, source,
    specversion and type; time as RFC 3339; attribute names of a-z and 0-9, at most 20."""
    attributes = {name.lower()[3:]: value for name, value in headers.items()
                  if name.lower().startswith("ce-")}
    if not attributes:
        return {}, []
    errors = []
    for name in attributes:
        if not re.fullmatch(r"[a-z0-9]{1,20}", name):
            errors.append(f"attribute name '{name}'")
    for name in ("id", "source", "specversion", "type"):
        if not attributes.get(name):
            errors.append(f"required attribute '{name}' missing or empty")
    if attributes.get("specversion") != "1.0":
        errors.append(f"specversion {attributes.get('specversion')!r}")
    source = urllib.parse.urlparse(attributes.get("source", ""))
    if not (source.scheme or source.path):
        errors.append(f"source {attributes.get('source')!r} is not a URI-reference")
    if "time" in attributes:
        try:
            datetime.datetime.fromisoformat(attributes["time"].replace("Z", "+00:00"))
        except ValueError:
            errors.append(f"time {attributes['time']!r} is not RFC 3339")
    attributes["datacontenttype"] = headers.get("Content-Type", "")
    return attributes, errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--refuse")
    parser.add_argument("--mode", choices=["early", "retry-after", "hang-up", "interim",
                                           "chunked", "expect-refuse", "expect-417", "slow"])
    parser.add_argument("--http11", action="store_true")
    parser.add_argument("--idle-timeout", type=float)
    args = parser.parse_args()

    requests = [0]
    connections = [0]
    lock = threading.Lock()

    def store(line: dict) -> None:
        with lock, open(args.store, "a", encoding="utf-8") as stored:
            stored.write(json.dumps(line) + "\n")

    class Receiver(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if args.http11 else "HTTP/1.0"
        timeout = args.idle_timeout

        def setup(self) -> None:
            super().setup()
            with lock:
                connections[0] += 1
                self.number = connections[0]

        def handle_expect_100(self) -> bool:
            if args.mode not in ("expect-refuse", "expect-417"):
                return super().handle_expect_100()
            status = 417 if args.mode == "expect-417" else 413
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.connection.settimeout(1.0)
            try:
                body_sent = len(self.rfile.peek(1)) > 0
            except (socket.timeout, OSError):
                body_sent = False
            store({"id": self.headers.get("Idempotency-Key"), "refused": status,
                   "body_sent": body_sent})
            return False

        def answer(self, body: bytes) -> None:
            """200 with `body`: its length said in HTTP/1.1, the connection's end in 1.0."""
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            if args.mode == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                return
            if args.http11:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            with lock:
                requests[0] += 1
                first = requests[0] == 1
            length = int(self.headers.get("Content-Length", "0"))
            if args.mode == "hang-up" and first:
                self.rfile.read(length // 2)
                self.close_connection = True
                self.connection.close()
                return
            if args.mode == "early":
                self.send_response(200)
                self.end_headers()
                self.wfile.flush()
            report = json.loads(self.rfile.read(length))
            if args.mode == "retry-after" and first:
                self.send_response(503)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if args.refuse:
                try:
                    with open(args.refuse, encoding="utf-8") as refuse:
                        if refuse.read().strip() == report.get("event"):
                            self.send_response(503)
                            self.send_header("Content-Length", "0")
                            self.end_headers()
                            return
                except FileNotFoundError:
                    pass
            attributes, errors = cloudevent(self.headers)
            store({"id": report.get("id"),
                   "idempotency_key": self.headers.get("Idempotency-Key"),
                   "created_at": report.get("created_at"),
                   "cloudevent": attributes,
                   "cloudevent_errors": errors,
                   "connection": self.number,
                   "expect": self.headers.get("Expect"),
                   "length": length})
            if args.mode == "slow" and first:
                for byte in b"HTTP/1.0 200 \r\n\r\n":
                    self.wfile.write(bytes([byte]))
                    time.sleep(1)
                self.close_connection = True
                return
            if args.mode == "interim":
                self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </r.css>; rel=preload\r\n\r\n"
                                 b"HTTP/1.1 102 Processing\r\n\r\n")
            if args.mode == "early":
                self.wfile.write(b"stored\n")
            else:
                self.answer(b"stored\n")

        def log_message(self, *_args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Receiver)
    server.daemon_threads = True
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
