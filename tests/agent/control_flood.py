#!/usr/bin/env python3
"""Heavy use of tetherd's control socket by a client that is not tetherd's own.

Usage: control_flood.py SOCKET pipeline COUNT
         sends COUNT status requests in one go and reads nothing; prints how many
         requests went out before tetherd stopped reading, and whether (and after how
         long) tetherd closed the connection
       control_flood.py SOCKET hold COUNT SECONDS
         opens COUNT connections, each subscribed to events, and holds them SECONDS;
         prints how many were admitted and how many refused for too many connections
"""
import json
import resource
import socket
import sys
import time


def pipeline(path: str, count: int) -> dict:
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    client.setblocking(False)
    data = b'{"command":"status"}\n' * count
    sent = 0
    started = time.monotonic()
    last_progress = started
    closed_after = None
    while time.monotonic() - started < 30:
        try:
            if sent < len(data):
                n = client.send(data[sent:sent + 65536])
                sent += n
                last_progress = time.monotonic()
                continue
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.monotonic() - last_progress
            break
        time.sleep(0.05)
    return {"requests_sent": sent // len(b'{"command":"status"}\n'),
            "closed": closed_after is not None,
            "closed_after_s": closed_after}


def hold(path: str, count: int, seconds: float) -> dict:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held, refused, other = [], 0, []
    for _ in range(count):
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        try:  # a refused connection may be closed before the request is out
            client.sendall(b'{"command":"events"}\n')
        except (BrokenPipeError, ConnectionResetError):
            pass
        client.settimeout(10)
        try:
            line = client.makefile("rb").readline()
        except socket.timeout:
            line = b"(no answer)"
        except ConnectionResetError:
            line = b"(reset)"
        if b'"subscribed":true' in line:
            held.append(client)
        elif b"too many connections" in line:
            refused += 1
            client.close()
        else:
            other.append(line.decode(errors="replace"))
            client.close()
    print(json.dumps({"admitted": len(held), "refused": refused, "other": other}), flush=True)
    time.sleep(seconds)
    return {}


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "pipeline":
        print(json.dumps(pipeline(path, int(sys.argv[3]))))
    else:
        hold(path, int(sys.argv[3]), float(sys.argv[4]))


if __name__ == "__main__":
    main()
