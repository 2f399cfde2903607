"""Port checks: fail before spawning anything when a port is taken, instead of minutes later."""

from __future__ import annotations

import socket
from collections.abc import Iterable


class PortInUse(RuntimeError):
    def __init__(self, port: int, owner: str) -> None:
        super().__init__(f"port {port} (wanted by {owner}) is already in use")
        self.port = port
        self.owner = owner


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Free as a server would see it: servers bind with SO_REUSEADDR, so a port whose last connections
    linger in TIME_WAIT (a server just restarted) counts as free; a listening socket does not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_ports_free(claims: Iterable[tuple[int, str]], host: str = "127.0.0.1") -> None:
    """Raise PortInUse for the first taken or doubly claimed port; ``claims`` are (port, owner) pairs."""
    seen: dict[int, str] = {}
    for port, owner in claims:
        if port in seen:
            raise PortInUse(port, f"{owner} and {seen[port]}")
        seen[port] = owner
        if not port_is_free(port, host):
            raise PortInUse(port, owner)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free right now (held open together so they cannot repeat)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]
