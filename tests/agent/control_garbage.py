#!/usr/bin/env python3
"""Sends malformed requests of every type to tetherd's control socket, as a client that
is not tetherd's own would, and checks that each one gets a refusal.

Usage: control_garbage.py SOCKET [COUNT]

Deterministic (a fixed seed). Prints one JSON line: how many requests were sent, how
many refusals came back, and any reply that was not a refusal.
"""
import json
import random
import socket
import sys

VALUES = [5, -1, 1.5, 1e308, 18446744073709551615, -9223372036854775809, None, True, False,
          "", "x" * 5000, "\u00e9", [], [1, "a"], {}, {"a": {"b": []}}, "status"]
FIELDS = {"sync": "wait", "show": "id", "rollback": "commit", "suspend": "reason"}
WRONG = {  # values of the wrong type for each field
    "wait": [v for v in VALUES if not isinstance(v, bool)],
    "id": [v for v in VALUES if not (isinstance(v, int) and not isinstance(v, bool)
                                    and -2**63 <= v < 2**63)],
    "commit": [v for v in VALUES if not isinstance(v, str)],
    "reason": [v for v in VALUES if not isinstance(v, str)] + ["r" * 5000],
}
COMMANDS = ["status", "sync", "plan", "history", "show", "events", "metrics", "rollback",
            "suspend", "resume"]


def malformed(rng):
    """One request line (bytes, newline-terminated) that tetherd must refuse."""
    kind = rng.randrange(8)
    if kind == 0:  # a command of the wrong type
        value = rng.choice([v for v in VALUES if v != "status" and v != ""])
        if isinstance(value, str):
            value = value + "?"  # no such command
        line = json.dumps({"command": value})
    elif kind == 1:  # a known command, a field of the wrong type
        command = rng.choice(list(FIELDS))
        field = FIELDS[command]
        line = json.dumps({"command": command, field: rng.choice(WRONG[field])})
    elif kind == 2:  # an unknown command
        line = json.dumps({"command": rng.choice(COMMANDS) + rng.choice(["x", " ", "\u0000", "/"])})
    elif kind == 3:  # not an object
        line = json.dumps(rng.choice([[], [{"command": "status"}], "status", 5, None, True]))
    elif kind == 4:  # broken JSON
        text = json.dumps({"command": rng.choice(COMMANDS)})
        cut = rng.randrange(1, len(text) - 1)
        line = text[:cut]
    elif kind == 5:  # deep nesting
        depth = rng.randrange(100, 20000)
        line = "[" * depth + "]" * depth
    elif kind == 6:  # random bytes (no newline), not UTF-8 most of the time
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        return raw.replace(b"\n", b" ") + b"\n"
    else:  # an object without a command, or a command name in the wrong place
        line = json.dumps(rng.choice([{}, {"cmd": "status"}, {"status": True},
                                      {"command": ""}, {"": "status"}]))
    return line.encode("utf-8", "surrogatepass") + b"\n"


def main():
    path = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    rng = random.Random(20261203)
    sent = refused = 0
    bad = []
    per_connection = 100
    while sent < count:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(path)
            reader = sock.makefile("rb")
            batch = [malformed(rng) for _ in range(min(per_connection, count - sent))]
            sock.sendall(b"".join(batch))
            for request in batch:
                line = reader.readline()
                sent += 1
                try:
                    reply = json.loads(line)
                except ValueError:
                    bad.append({"request": request[:80].decode("latin-1"),
                                "reply": line[:200].decode("latin-1")})
                    continue
                if reply.get("ok") is False and reply.get("error") and \
                        reply.get("schema") == "tether.ctl/v1":
                    refused += 1
                else:
                    bad.append({"request": request[:80].decode("latin-1"), "reply": reply})
    # One line over the 64 KiB limit: refused, the connection then ends.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(b"{\"command\": \"" + b"a" * (80 << 10) + b"\"}\n")
        reply = json.loads(sock.makefile("rb").readline())
        too_long = reply.get("ok") is False and "too long" in reply.get("error", "")
    print(json.dumps({"sent": sent, "refused": refused, "too_long_refused": too_long,
                      "bad": bad[:5]}))


if __name__ == "__main__":
    main()
