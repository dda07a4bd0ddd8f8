"""The network guard of replay: no connection leaves the machine, no name is looked up.

HTTP capture answers every request of the clients it patches from the bundle, so a
replayed test needs no network. The guard catches everything else: other clients, raw
sockets, DNS. While it is active:

- ``socket.connect`` / ``connect_ex`` / ``sendto`` to an internet address raise
  :class:`~pytest_llmwb.exceptions.LiveCallBlockedError`; loopback is allowed only to a
  port a server of this process (or of a process it started) listens on, so a local
  service the test did not start (a database, a local model server) is blocked too;
  Unix sockets are allowed;
- ``getaddrinfo``, ``gethostbyname`` and ``gethostbyname_ex`` refuse names other than
  ``localhost`` and ``*.localhost`` (numeric addresses need no lookup);
- the hosts in ``allow_hosts`` (names, addresses, ``name:port``, ``*.suffix``) pass, for
  tests that must reach a service: the documented escape hatch.

The error is not an ``OSError``, so clients and SDKs neither wrap it into a connection
error nor retry it. Every blocked attempt is kept in :attr:`NetworkGuard.attempts`: a
test that swallowed the error still fails afterwards.

Sockets opened in C (pycurl, grpc, Rust clients) and C resolvers (aiodns) are beyond
its reach; for a hard guarantee run replays in a network namespace (``unshare -rn``)
or a container without network. Outside Linux any loopback port is allowed.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
from typing import Any

from ..exceptions import LiveCallBlockedError
from .session import host_allowed

__all__ = ["NetworkGuard"]

_LOCAL_NAMES = ("localhost",)


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def _is_numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    children = [int(c) for c in handle.read().split()]
            except OSError:
                continue
            found += children
            stack += children
    return found


def _listening_here(port: int) -> bool | None:
    """Whether a socket of this process (or its children) listens on ``port``.

    ``None`` when that cannot be known (no ``/proc``).
    """
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc/self/fd"):
        return None
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    if not inodes:
        return False
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in [os.getpid(), *_descendants(os.getpid())]:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return True
            except OSError:
                continue
    return False


class NetworkGuard:
    """Blocks non-local network access while active (a context manager; re-entrant)."""

    def __init__(self, *, allow_hosts: tuple[str, ...] = (), record_command: str = "") -> None:
        self.allow_hosts = allow_hosts
        self.record_command = record_command
        self.attempts: list[str] = []
        self._allowed_ips: set[str] = set()
        self._saved: dict[tuple[Any, str], Any] = {}
        self._lock = threading.Lock()

    # -- decisions ----------------------------------------------------------------------

    def _blocked(self, what: str) -> LiveCallBlockedError:
        with self._lock:
            self.attempts.append(what)
        hatch = "@pytest.mark.llmwb(allow_hosts=[...]) or --llmwb-allow-hosts"
        return LiveCallBlockedError(
            f"replay blocked a live network access: {what}. In replay nothing leaves the "
            "machine; HTTP calls are served from the bundle, and this one is not there",
            attempt=what,
            fix=f"record the test: {self.record_command}; or, to reach a local service "
            f"on purpose, allow its host with {hatch}",
        )

    def _allowed(self, host: str, port: int | None) -> bool:
        return host in self._allowed_ips or (
            bool(self.allow_hosts) and host_allowed(host, port, self.allow_hosts)
        )

    def check_address(self, family: int, address: Any, verb: str) -> None:
        """Raise for an ``AF_INET``/``AF_INET6`` address that may not be reached."""
        __tracebackhide__ = True
        if family not in (socket.AF_INET, socket.AF_INET6):
            return
        if not isinstance(address, tuple) or not address:
            return
        host = str(address[0])
        port = address[1] if len(address) > 1 and isinstance(address[1], int) else None
        if self._allowed(host, port):
            return
        if _is_loopback(host):
            if port is None or verb != "connect":
                return
            here = _listening_here(port)
            if here is None or here:
                return
            raise self._blocked(
                f"{verb} to {host}:{port}, a loopback port no server of this test listens on"
            )
        raise self._blocked(f"{verb} to {host}:{port}" if port is not None else f"{verb} to {host}")

    def check_name(self, host: Any, port: Any = None) -> None:
        """Raise for a DNS lookup of a name that is not local."""
        __tracebackhide__ = True
        if host is None:
            return
        name = host.decode("idna") if isinstance(host, bytes) else str(host)
        lowered = name.lower().rstrip(".")
        if not lowered or _is_numeric(lowered) or lowered in _LOCAL_NAMES:
            return
        if lowered.endswith(".localhost"):
            return
        number = port if isinstance(port, int) else None
        if self.allow_hosts and host_allowed(lowered, number, self.allow_hosts):
            return
        raise self._blocked(f"DNS lookup of {name!r}")

    # -- patching -----------------------------------------------------------------------

    def __enter__(self) -> NetworkGuard:
        guard = self
        sock = socket.socket
        connect, connect_ex, sendto = sock.connect, sock.connect_ex, sock.sendto
        getaddrinfo = socket.getaddrinfo
        gethostbyname, gethostbyname_ex = socket.gethostbyname, socket.gethostbyname_ex

        def check_connect(sock: socket.socket, address: Any) -> None:
            __tracebackhide__ = True
            try:
                guard.check_address(sock.family, address, "connect")
            except LiveCallBlockedError:
                # callers such as socket.create_connection close a socket only on OSError
                sock.close()
                raise

        def guarded_connect(self: socket.socket, address: Any) -> None:
            __tracebackhide__ = True
            check_connect(self, address)
            connect(self, address)

        def guarded_connect_ex(self: socket.socket, address: Any) -> int:
            __tracebackhide__ = True
            check_connect(self, address)
            return connect_ex(self, address)

        def guarded_sendto(self: socket.socket, *args: Any) -> int:
            __tracebackhide__ = True
            guard.check_address(self.family, args[-1], "sendto")
            return sendto(self, *args)

        def guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            guard.check_name(host, port)
            result = getaddrinfo(host, port, *args, **kwargs)
            if guard.allow_hosts and host is not None:
                with guard._lock:
                    guard._allowed_ips.update(str(entry[4][0]) for entry in result)
            return result

        def guarded_gethostbyname(host: str) -> str:
            __tracebackhide__ = True
            guard.check_name(host)
            return gethostbyname(host)

        def guarded_gethostbyname_ex(host: str) -> Any:
            __tracebackhide__ = True
            guard.check_name(host)
            return gethostbyname_ex(host)

        for owner, name, value in (
            (sock, "connect", guarded_connect),
            (sock, "connect_ex", guarded_connect_ex),
            (sock, "sendto", guarded_sendto),
            (socket, "getaddrinfo", guarded_getaddrinfo),
            (socket, "gethostbyname", guarded_gethostbyname),
            (socket, "gethostbyname_ex", guarded_gethostbyname_ex),
        ):
            self._saved[(owner, name)] = (getattr(owner, name), value)
            setattr(owner, name, value)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for (owner, name), (original, ours) in self._saved.items():
            if getattr(owner, name) is ours:
                setattr(owner, name, original)
        self._saved.clear()
