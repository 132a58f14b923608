#!/usr/bin/env python3
"""A report receiver that tether did not write: Python's http.server, as small receivers
are. It stores every report it is sent, one JSON line each ({"id", "idempotency_key",
"created_at"}), in --store, and answers 200 in HTTP/1.0: no Content-Length, the
connection closed after the answer, and, over TLS (--cert, --key), closed without a TLS
close_notify, as Python's ssl module does when a socket is closed without unwrap().

Usage: report_receiver.py --port PORT --store FILE [--cert PEM --key PEM]
"""
import argparse
import http.server
import json
import ssl


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()

    class Receiver(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length", "0"))
            report = json.loads(self.rfile.read(length))
            with open(args.store, "a", encoding="utf-8") as store:
                store.write(json.dumps({"id": report.get("id"),
                                        "idempotency_key": self.headers.get("Idempotency-Key"),
                                        "created_at": report.get("created_at")}) + "\n")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"stored\n")

        def log_message(self, *_args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", args.port), Receiver)
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
