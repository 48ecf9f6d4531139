"""Bind the listeners' sockets before anything else starts, so a port in use is one clear line."""

from __future__ import annotations

import os
import socket

from ..errors import ListenError
from ..settings import Address

BACKLOG = 1024


def bind(address: Address, name: str) -> socket.socket:
    """A listening socket on `address` (`:PORT` is every interface, IPv6 and IPv4 where the host has both)."""
    try:
        if not address.host:
            if socket.has_dualstack_ipv6():
                return socket.create_server(
                    ("", address.port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=BACKLOG
                )
            return socket.create_server(("", address.port), backlog=BACKLOG)
        family, _, _, _, sockaddr = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        return socket.create_server(sockaddr[:2], family=family, backlog=BACKLOG)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)  # create_server appends the address again
        raise ListenError(f"cannot listen on {address} ({name} listener): {reason}") from None
