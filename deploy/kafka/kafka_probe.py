#!/usr/bin/env python3
"""Readiness probe for the local Kafka broker (stdlib only).

Usage: kafka_probe.py HOST PORT [TIMEOUT_SECONDS]

Sends one Metadata v4 request (no topics) over the Kafka wire protocol and
exits 0 when the answer lists at least one live broker, i.e. the broker has
finished starting, is unfenced and serves client requests. Exits 1 otherwise
(nothing listening, not Kafka, not ready yet). Kafka 4 dropped Metadata
versions below 4, and v4 is still a non-flexible version, which keeps the
encoding trivial.
"""

import socket
import struct
import sys

API_METADATA = 3
API_VERSION = 4
CORRELATION_ID = 0x5E7E


def _read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        buf += chunk
    return buf


def probe(host, port, timeout):
    client_id = b"retention-kafka-probe"
    header = struct.pack(">hhih", API_METADATA, API_VERSION, CORRELATION_ID, len(client_id)) + client_id
    # topics: empty array (= no topics); allow_auto_topic_creation: false
    body = struct.pack(">ib", 0, 0)
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _read_exact(sock, 4))
        if size < 12 or size > 10 * 1024 * 1024:
            return False
        payload = _read_exact(sock, size)
    correlation, _throttle, broker_count = struct.unpack(">iii", payload[:12])
    return correlation == CORRELATION_ID and broker_count >= 1


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    host, port = argv[1], int(argv[2])
    timeout = float(argv[3]) if len(argv) > 3 else 3.0
    try:
        return 0 if probe(host, port, timeout) else 1
    except (OSError, ValueError, struct.error):
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
