"""What admission costs on the hot path: NULL, PLAIN (the local runtime) and CURVE (the TCP
scheduler, later), over the runtime's own transport (an ipc socket), set up by peerauth.

    python bench/bench_auth.py

For each mechanism: the handshake (connect to first reply), small round trips (a Task/TaskDone
sized message) and 8 MB frames one way (a W4 result that does not fit the arena). Medians.
"""
from __future__ import annotations

import statistics
import tempfile
import time

import zmq

from dcplocal import peerauth


def _pair(context: zmq.Context, address: str, mechanism: str):
    server = context.socket(zmq.ROUTER)
    client = context.socket(zmq.DEALER)
    for s in (server, client):
        s.setsockopt(zmq.LINGER, 0)
    if mechanism == "PLAIN":
        tokens = peerauth.PlainTokens()
        zap = peerauth.ZapHandler(context, tokens)
        peerauth.plain_server(server)
        peerauth.plain_client(client, "w", tokens.issue("w"))
    elif mechanism == "CURVE":
        server_public, server_secret = peerauth.curve_keypair()
        public, secret = peerauth.curve_keypair()
        zap = peerauth.ZapHandler(context, peerauth.CurveKeys({public: "w"}))
        peerauth.curve_server(server, server_secret)
        peerauth.curve_client(client, server_public, public, secret)
    else:
        zap = None
    server.bind(address)
    return server, client, zap


def _serve_zap(zap, server) -> None:
    poller = zmq.Poller()
    if zap is not None:
        poller.register(zap.socket, zmq.POLLIN)
    poller.register(server, zmq.POLLIN)
    while True:
        events = dict(poller.poll(5000))
        if zap is not None and zap.socket in events:
            zap.handle()
        if server in events:
            return


def measure(mechanism: str) -> dict:
    context = zmq.Context()
    with tempfile.TemporaryDirectory() as directory:
        server, client, zap = _pair(context, f"ipc://{directory}/s", mechanism)
        started = time.perf_counter()
        client.connect(f"ipc://{directory}/s")
        client.send(b"hello")
        _serve_zap(zap, server)
        identity, _ = server.recv_multipart()
        handshake = time.perf_counter() - started
        small = []
        for _ in range(2000):
            t = time.perf_counter()
            client.send(b"x" * 120)
            server.recv_multipart()
            server.send_multipart([identity, b"y" * 60])
            client.recv()
            small.append(time.perf_counter() - t)
        big_frame = bytearray(8_000_000)
        big = []
        for _ in range(30):
            t = time.perf_counter()
            client.send(big_frame, copy=False)
            server.recv_multipart(copy=False)
            big.append(time.perf_counter() - t)
        for s in (server, client):
            s.close(0)
        if zap is not None:
            zap.close()
    context.term()
    return {"handshake ms": handshake * 1e3, "round trip us": statistics.median(small) * 1e6,
            "8 MB one way ms": statistics.median(big) * 1e3}


if __name__ == "__main__":
    results = {m: measure(m) for m in ("NULL", "PLAIN", "CURVE")}
    print(f"{'':8}" + "".join(f"{k:>18}" for k in results["NULL"]))
    for mechanism, row in results.items():
        print(f"{mechanism:8}" + "".join(f"{v:18.2f}" for v in row.values()))
