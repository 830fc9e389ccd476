"""Who may talk to a broker: ZeroMQ security (ZAP) set up the same way for every transport.

A peer is let in only if it proves it was given a secret by the runtime that owns the broker.
The check runs in ZeroMQ's handshake, before the ROUTER delivers a single frame from the peer,
so nothing a stranger sends is ever decoded, let alone unpickled::

    worker DEALER --PLAIN hello(user, token)--> broker ROUTER (plain_server)
                                                   | ZAP request (inproc://zeromq.zap.01)
                                                   v
                                       ZapHandler on the broker's loop -> verify() -> 200 / 400

Two mechanisms, one handler:
  * PLAIN (the local runtime): a per-worker token over a 0700 unix socket. Frames are not
    encrypted, so a 8 MB result costs what it cost before; nobody can listen on a unix socket
    connection, and nobody but the user can reach this one.
  * CURVE (the TCP scheduler, later): the same handler, with ``verify`` checking the client's
    public key against an allow list; every frame is encrypted.

``PlainTokens`` issues one token per worker and revokes it when the worker is gone, so a token
proves "the runtime spawned this worker and it is still alive". Tokens reach workers through an
inherited pipe (see supervisor.py), never argv or the environment.

Must not know: messages, workers, jobs, event loops (the owner polls ``fd`` and calls ``handle``).
"""
from __future__ import annotations

import hmac
import logging
import secrets
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import zmq

_log = logging.getLogger("dcplocal")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = "dcplocal"

#: verify(mechanism, credentials) -> the peer's user id, or None to refuse it
Verify = Callable[[str, List[bytes]], Optional[str]]


def new_token() -> str:
    """A fresh secret: 256 random bits, printable (PLAIN passwords are at most 255 bytes)."""
    return secrets.token_urlsafe(32)


def curve_keypair() -> Tuple[bytes, bytes]:
    """(public, secret) Z85 keys for CURVE."""
    return zmq.curve_keypair()


class ZapHandler:
    """Answers the ZAP requests of one `zmq.Context` (bind it before any secured socket binds).

    Not thread-safe: call ``handle`` from one thread, whenever ``fd`` is readable (the fd is
    edge-triggered: ``handle`` drains every waiting request) and now and then as a safety net.
    """

    def __init__(self, context: zmq.Context, verify: Verify) -> None:
        self.verify = verify
        self.socket = context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)
        self.accepted = 0
        self.refused = 0
        #: the last few refusals: (monotonic time, mechanism, user or key, peer address)
        self.refusals: List[Tuple[float, str, str, str]] = []

    @property
    def fd(self) -> int:
        return self.socket.getsockopt(zmq.FD)

    def handle(self) -> None:
        try:
            while self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self._answer(self.socket.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            pass

    def _answer(self, request: List[bytes]) -> None:
        version, request_id = (request + [b"", b""])[:2]
        if version != b"1.0" or len(request) < 6:
            self._reply(request_id, b"400", b"malformed ZAP request")
            return
        domain, address, _routing_id, mechanism, *credentials = request[2:]
        user = None
        if domain == ZAP_DOMAIN.encode():
            user = self.verify(mechanism.decode("ascii", "replace"), credentials)
        if user is None:
            self.refused += 1
            who = credentials[0][:64].decode("ascii", "replace") if credentials else ""
            self.refusals = self.refusals[-9:] + [
                (time.monotonic(), mechanism.decode("ascii", "replace"), who,
                 address.decode("ascii", "replace"))]
            self._reply(request_id, b"400", b"not a peer of this runtime")
            if self.refused <= 5 or self.refused % 100 == 0:  # a rogue may knock in a loop
                _log.warning("refused a peer without this runtime's credentials (%s, user %r, "
                             "%d refused so far)", mechanism.decode("ascii", "replace"), who,
                             self.refused)
        else:
            self.accepted += 1
            self._reply(request_id, b"200", b"OK", user.encode())

    def _reply(self, request_id: bytes, status: bytes, text: bytes, user: bytes = b"") -> None:
        self.socket.send_multipart([b"1.0", request_id, status, text, user, b""])

    def close(self) -> None:
        self.socket.close(linger=0)


class PlainTokens:
    """``verify`` for PLAIN: one live token per user name (a worker identity)."""

    def __init__(self) -> None:
        self.tokens: Dict[str, str] = {}

    def issue(self, user: str) -> str:
        token = self.tokens[user] = new_token()
        return token

    def revoke(self, user: str) -> None:
        self.tokens.pop(user, None)

    def __call__(self, mechanism: str, credentials: List[bytes]) -> Optional[str]:
        if mechanism != "PLAIN" or len(credentials) != 2:
            return None
        user = credentials[0].decode("utf-8", "replace")
        expected = self.tokens.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), credentials[1]):
            return None
        return user


class CurveKeys:
    """``verify`` for CURVE: the Z85 public keys allowed in (the TCP scheduler's allow list)."""

    def __init__(self, allowed: Dict[bytes, str]) -> None:
        self.allowed = allowed  # public key -> user id

    def __call__(self, mechanism: str, credentials: List[bytes]) -> Optional[str]:
        if mechanism != "CURVE" or len(credentials) != 1:
            return None
        from zmq.utils import z85

        return self.allowed.get(z85.encode(credentials[0]))


def _domain(socket: zmq.Socket) -> None:
    socket.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    if hasattr(zmq, "ZAP_ENFORCE_DOMAIN"):  # fail closed should the handler ever be missing
        try:
            socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        except zmq.ZMQError:
            pass


def plain_server(socket: zmq.Socket) -> None:
    """Make ``socket`` (before it binds) accept only PLAIN peers that the ZAP handler accepts."""
    _domain(socket)
    socket.setsockopt(zmq.PLAIN_SERVER, 1)


def plain_client(socket: zmq.Socket, user: str, token: str) -> None:
    """Give ``socket`` (before it connects) its PLAIN credentials."""
    socket.setsockopt(zmq.PLAIN_USERNAME, user.encode())
    socket.setsockopt(zmq.PLAIN_PASSWORD, token.encode())


def curve_server(socket: zmq.Socket, secret_key: bytes) -> None:
    """Make ``socket`` (before it binds) a CURVE server whose peers the ZAP handler vets."""
    _domain(socket)
    socket.setsockopt(zmq.CURVE_SERVER, 1)
    socket.setsockopt(zmq.CURVE_SECRETKEY, secret_key)


def curve_client(socket: zmq.Socket, server_public: bytes, public: bytes, secret: bytes) -> None:
    """Give ``socket`` (before it connects) its CURVE keys and the server's public key."""
    socket.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, public)
    socket.setsockopt(zmq.CURVE_SECRETKEY, secret)


class HandshakeError(ConnectionError):
    """A secured socket did not complete its handshake (refused, or no broker there)."""


def wait_for_handshake(socket: zmq.Socket, monitor: zmq.Socket, endpoint: str,
                       timeout: float) -> None:
    """Block until ``socket`` has been let in by its peer; `HandshakeError` on refusal or after
    ``timeout`` seconds. ``monitor``: ``socket.get_monitor_socket()``, made before connecting."""
    from zmq.utils.monitor import recv_monitor_message

    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not monitor.poll(int(left * 1000) + 1):
                raise HandshakeError(f"no broker answered at {endpoint} within {timeout:g} s")
            event: Any = recv_monitor_message(monitor)
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return
            if event["event"] & (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                 | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                raise HandshakeError(f"the broker at {endpoint} refused this peer "
                                     f"(handshake event {event['event']}, value {event['value']})")
    finally:
        socket.disable_monitor()
        monitor.close(linger=0)
