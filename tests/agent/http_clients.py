#!/usr/bin/env python3
"""HTTP clients that are not tetherd's own, for its webhook and metrics listeners.

Usage:
  http_clients.py send FORM URL SECRET REF [--wrong]
      POSTs a push event as FORM sends it (github, gitlab, gitea, forgejo, tether), signed
      with SECRET (or with a wrong secret, --wrong), with "ref": REF in its JSON body.
      Prints the HTTP status.
  http_clients.py burst COUNT FORM URL SECRET REF
      Sends COUNT such push events at once, from COUNT threads. Prints the statuses, one
      per line.
  http_clients.py hostile HOST PORT
      Malformed and hostile requests: garbage bytes, an oversized header and body, a
      slow sender, more connections than the limit, a pipelined burst. Deterministic.
      Prints one JSON line: what each case got back.
  http_clients.py limits HOST PORT
      The connection limits, from several loopback addresses (127.0.0.2-6): connections
      per peer, a new caller when every slot is idle between requests, and when every
      slot is busy. Prints one JSON line.
  http_clients.py metrics URL
      GETs URL and parses it with prometheus_client's own text parser; prints one JSON
      line: {"content_type": ..., "families": {name: {"type": ..., "samples": [...]}}}.
"""
import hashlib
import hmac
import json
import random
import socket
import sys
import time
import urllib.error
import urllib.request


def send(form, url, secret, ref, wrong, out=print):
    key = (secret + "-wrong" if wrong else secret).encode()
    body = json.dumps({"ref": ref, "after": "0" * 40,
                       "repository": {"full_name": "ops/fleet"}}).encode()
    digest = hmac.new(key, body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "User-Agent": "http_clients.py"}
    if form == "github":
        headers.update({"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + digest,
                        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"})
    elif form == "gitlab":
        headers.update({"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": key.decode()})
    elif form == "gitea":
        headers.update({"X-Gitea-Event": "push", "X-Gitea-Signature": digest})
    elif form == "forgejo":
        headers.update({"X-Forgejo-Event": "push", "X-Forgejo-Signature": digest})
    elif form == "tether":
        headers.update({"X-Tether-Signature": "sha256=" + digest})
    else:
        raise SystemExit("unknown form " + form)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            out(response.status)
    except urllib.error.HTTPError as error:
        out(error.code)


def burst(count, form, url, secret, ref):
    import threading
    statuses = []
    threads = [threading.Thread(target=send, args=(form, url, secret, ref, False,
                                                   statuses.append))
               for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for status in statuses:
        print(status)


def exchange(host, port, data, wait=3.0, pause=0.0):
    """Sends `data` (a list of chunks, `pause` seconds apart) and returns what came back
    before the server closed or `wait` seconds passed."""
    with socket.create_connection((host, port), timeout=wait) as sock:
        try:
            for chunk in data:
                sock.sendall(chunk)
                if pause:
                    time.sleep(pause)
        except OSError:
            pass
        received = b""
        try:
            while True:
                more = sock.recv(65536)
                if not more:
                    break
                received += more
        except OSError:
            pass
    return received


def status_of(reply):
    if not reply.startswith(b"HTTP/1."):
        return "closed" if not reply else "garbage"
    return int(reply.split(b" ", 2)[1])


def hostile(host, port):
    rng = random.Random(20261204)
    results = {}
    garbage = []
    for _ in range(20):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000)))
        garbage.append(status_of(exchange(host, port, [blob + b"\r\n\r\n"])))
    results["garbage"] = garbage
    results["not_http"] = status_of(exchange(host, port, [b"SSH-2.0-OpenSSH_9.2\r\n\r\n"]))
    results["bad_version"] = status_of(exchange(host, port, [b"POST / HTTP/9.9\r\n\r\n"]))
    results["huge_header"] = status_of(exchange(
        host, port, [b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n"]))
    results["huge_body"] = status_of(exchange(
        host, port, [b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n",
                     b"b" * 2000000]))
    results["bad_length"] = status_of(exchange(
        host, port, [b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"]))
    results["bad_chunk"] = status_of(exchange(
        host, port,
        [b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n"]))
    # More connections than the server takes, all held open and silent.
    held = []
    for _ in range(100):
        try:
            held.append(socket.create_connection((host, port), timeout=5))
        except OSError:
            break
    results["held_connections"] = len(held)
    # While they are held, one more request: refused (closed) or served.
    results["while_held"] = status_of(exchange(
        host, port, [b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"], wait=2))
    for sock in held:
        sock.close()
    time.sleep(0.5)
    # A pipelined burst on one connection: every request answered, in order.
    burst = b"".join(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n" for _ in range(50))
    reply = exchange(host, port, [burst + b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"])
    results["pipelined_replies"] = reply.count(b"HTTP/1.1 ")
    # A slow sender: one byte of a request every 0.5 s, until the server gives up.
    started = time.monotonic()
    slow = exchange(host, port, [bytes([b]) for b in b"POST / HTTP/1.1\r\nHost: x\r\n"] * 3,
                    wait=30, pause=0.5)
    results["slow"] = status_of(slow)
    results["slow_cut_after_s"] = round(time.monotonic() - started)
    print(json.dumps(results))


def connect_from(source, host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(3)
    sock.bind((source, 0))
    sock.connect((host, port))
    return sock


def closed_by_server(sock):
    sock.settimeout(0.5)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def read_response(sock):
    """One response with a Content-Length; returns its status, or "closed"."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                return "closed"
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            more = sock.recv(65536)
            if not more:
                return "closed"
            body += more
        return int(head.split(b" ", 2)[1])
    except OSError:
        return "closed"


def limits(host, port):
    results = {}
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    # Silent connections from one address: only so many are kept.
    held = [connect_from("127.0.0.2", host, port) for _ in range(12)]
    time.sleep(0.5)
    results["per_peer_open"] = sum(1 for sock in held if not closed_by_server(sock))
    for sock in held:
        sock.close()
    time.sleep(0.5)
    def fill_then_newcomer(first_bytes, answered):
        """Takes every slot (4 addresses x 8 connections), each sending `first_bytes` (and
        reading its answer when `answered`); returns how many were answered 200, and what a
        new caller from another address gets."""
        slots, served = [], 0
        for n in range(2, 6):
            for _ in range(8):
                sock = connect_from("127.0.0.%d" % n, host, port)
                sock.sendall(first_bytes)
                if answered and read_response(sock) == 200:
                    served += 1
                slots.append(sock)
        time.sleep(0.5)
        newcomer = connect_from("127.0.0.6", host, port)
        newcomer.sendall(request)
        got = read_response(newcomer)
        for sock in slots + [newcomer]:
            sock.close()
        time.sleep(0.5)
        return served, got

    # Kept-alive connections idle between requests: a new caller takes the place of one.
    results["idle_served"], results["full_of_idle"] = fill_then_newcomer(request, True)
    # Every slot busy with a request under way: a new caller is turned away.
    _, results["full_of_busy"] = fill_then_newcomer(b"GET /metrics HTTP/1.1\r\n", False)
    print(json.dumps(results))


def metrics(url):
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(url, timeout=10) as response:
        content_type = response.headers.get("Content-Type")
        text = response.read().decode()
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = {
            "type": family.type,
            "samples": [[s.name, s.labels, s.value] for s in family.samples]}
    print(json.dumps({"content_type": content_type, "families": families}))


def main():
    if len(sys.argv) >= 6 and sys.argv[1] == "send":
        send(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], "--wrong" in sys.argv[6:])
    elif len(sys.argv) == 7 and sys.argv[1] == "burst":
        burst(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
    elif len(sys.argv) == 4 and sys.argv[1] == "limits":
        limits(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "hostile":
        hostile(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "metrics":
        metrics(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
