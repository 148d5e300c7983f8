"""Hostile traffic for tools/soak.sh, until killed (standard library only).

    python3 tools/soak_hostile.py INGEST_PORT RESULTS_PORT

- every 5 s, a peer that sends a million zero-length parts in one message (the guard cuts it off
  at the part cap);
- 40 idle connections to the ingest socket, re-opened when the daemon closes them;
- 20 subscribers of the result PUB socket that subscribe to everything and never read (a 4 KiB
  receive buffer, so the daemon's side fills at once).

Prints a line of counts every minute (the soak prints the last one).
"""

import signal
import socket
import sys
import time

ingest, results = int(sys.argv[1]), int(sys.argv[2])


def greeting():
    g = bytearray(64)
    g[0], g[9], g[10] = 0xFF, 0x7F, 3
    g[12:16] = b"NULL"
    return bytes(g)


def ready(socket_type):
    body = b"\x05READY\x0bSocket-Type" + len(socket_type).to_bytes(4, "big") + socket_type
    return bytes([0x04, len(body)]) + body


def connect(port, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


counts = {"empty_part_peers": 0, "cut_off": 0, "idle_reopened": 0, "stalled_subscribers": 0}
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def empty_parts():
    counts["empty_part_peers"] += 1
    try:
        s = connect(ingest)
        s.sendall(greeting() + ready(b"PUSH"))
        s.sendall(b"\x01\x00" * (1 << 20))
        s.settimeout(10)
        while s.recv(65536):
            pass
        counts["cut_off"] += 1
    except OSError:
        counts["cut_off"] += 1
    finally:
        try:
            s.close()
        except Exception:
            pass


idle = []
stalled = []
for _ in range(20):
    try:
        s = connect(results, rcvbuf=4096)
        s.sendall(greeting() + ready(b"SUB") + b"\x00\x01\x01")
        stalled.append(s)
        counts["stalled_subscribers"] += 1
    except OSError:
        pass

last_empty = 0.0
last_report = time.time()
while not stop:
    # Keep 40 idle peers; the daemon closes ones over its cap or after its greeting timeout.
    alive = []
    for s in idle:
        # Read what the socket sent (its greeting) to see whether it has closed since.
        closed = False
        try:
            s.settimeout(0)
            while True:
                if s.recv(65536) == b"":
                    closed = True
                    break
        except BlockingIOError:
            pass
        except OSError:
            closed = True
        if closed:
            s.close()
            continue
        alive.append(s)
    idle = alive
    while len(idle) < 40:
        try:
            idle.append(connect(ingest))
            counts["idle_reopened"] += 1
        except OSError:
            break
    if time.time() - last_empty >= 5:
        last_empty = time.time()
        empty_parts()
    if time.time() - last_report >= 60:
        last_report = time.time()
        print(counts, flush=True)
    time.sleep(0.5)
print(counts, flush=True)
