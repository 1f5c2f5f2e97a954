"""The public port, bound with the standard library alone: it is the first thing the process
does, before Tornado (and anything else heavy) is imported.

Invariant: every returned socket is listening and non-blocking, ready for
``HTTPServer.add_sockets``; on failure nothing stays bound and the message names the address.
"""

from __future__ import annotations

import contextlib
import errno
import socket


class BindError(Exception):
    pass


def _listening_socket(family: int, address: tuple[object, ...]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # One socket per family, as Tornado does: "::" must not also claim IPv4.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _lookup_name(host: str) -> bytes | str | None:
    """``host`` as ``getaddrinfo`` takes it. An ASCII name goes as bytes, which is what CPython
    would encode it to, without loading the IDNA codec on the start-up path first."""
    if not host:
        return None
    return host.encode("ascii") if host.isascii() else host


def bind(host: str, port: int) -> list[socket.socket]:
    """Listen on every address ``host`` resolves to (both families for an empty host)."""
    try:
        infos = socket.getaddrinfo(
            _lookup_name(host), port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise BindError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, _type, _proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            try:
                sockets.append(_listening_socket(family, address))
            except OSError as error:
                if error.errno == errno.EADDRNOTAVAIL and family == socket.AF_INET6:
                    continue  # an IPv6 address on a host without IPv6: the IPv4 one will do
                raise
    except OSError as error:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        if error.errno == errno.EADDRINUSE:
            raise BindError(f"port {port} on {host} is already in use") from None
        if error.errno == errno.EACCES:
            raise BindError(f"not allowed to listen on {host}:{port}") from None
        raise BindError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    if not sockets:
        raise BindError(f"cannot listen on {host}:{port}: no usable address")
    return sockets
