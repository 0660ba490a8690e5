"""Reaching a Ray cluster: ``--address HOST:PORT`` is probed before ``ray.init`` so that a wrong address costs
a bounded wait and one line, not minutes of Ray's own retries and raw warnings."""

from __future__ import annotations

import socket
import time

from lolsearch.core.errors import ConfigError


def probe_address(address: str, timeout_s: float) -> None:
    """Waits up to ``timeout_s`` for ``HOST:PORT`` (``ray://HOST:PORT`` too) to answer as a gRPC server (Ray's
    GCS or client server), else raises :class:`ConfigError` naming the address: Ray itself would retry for
    minutes, printing raw warnings, at a port nobody or something else answers. ``auto`` is left to Ray."""
    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError.single("--address", "", f"'{address}' is not auto or HOST:PORT")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=max(0.1, min(2.0, timeout_s))) as s:
                if _speaks_grpc(s, max(0.5, min(5.0, deadline - time.monotonic()))):
                    return
                raise ConfigError.single("--address", "", f"{address} answers but not as a Ray cluster (no gRPC/HTTP2 "
                                         "reply); is it the head's GCS port (6379 unless ray start --port says)?")
        except OSError as err:
            reason = err.strerror or str(err) or type(err).__name__
        if time.monotonic() + 0.5 > deadline:
            raise ConfigError.single("--address", "", f"no Ray cluster answers at {address} within {timeout_s:g} s "
                                     f"({reason}); is `ray start --head` running there? (--connect-timeout)")
        time.sleep(0.5)


def _speaks_grpc(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server on ``sock`` answers an HTTP/2 client preface with a SETTINGS frame, as gRPC does."""
    sock.settimeout(timeout_s)
    try:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        head = b""
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:  # a timeout too: something listens but does not speak HTTP/2
        return False
    return head[3] == 4  # frame type SETTINGS
