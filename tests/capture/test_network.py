"""The network guard of replay: only loopback servers of the test, and allowed hosts."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from pytest_llmwb.capture.network import NetworkGuard
from pytest_llmwb.exceptions import LiveCallBlockedError

from .conftest import ToolServer


def test_dns_and_internet_connections_are_blocked() -> None:
    with NetworkGuard(record_command="pytest --llmwb-record t.py") as guard:
        with pytest.raises(LiveCallBlockedError) as raised:
            socket.getaddrinfo("api.openai.com", 443)
        assert "DNS lookup of 'api.openai.com'" in str(raised.value)
        assert "fix: record the test: pytest --llmwb-record t.py" in str(raised.value)
        with pytest.raises(LiveCallBlockedError):
            socket.getaddrinfo(b"api.anthropic.com", 443)  # anyio passes bytes
        with pytest.raises(LiveCallBlockedError, match=r"connect to 192\.0\.2\.1:443"):
            socket.create_connection(("192.0.2.1", 443), timeout=1)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
            pytest.raises(LiveCallBlockedError, match=r"sendto to 192\.0\.2\.1:53"),
        ):
            udp.sendto(b"x", ("192.0.2.1", 53))
        with pytest.raises(LiveCallBlockedError):
            urllib.request.urlopen("http://example.com/", timeout=1)
        # numeric and local names need no lookup
        assert socket.getaddrinfo("127.0.0.1", 80)
        assert socket.getaddrinfo("localhost", 80)
    assert len(guard.attempts) == 5
    assert socket.getaddrinfo.__module__ == "socket"  # restored


def test_loopback_is_allowed_only_to_servers_of_this_process() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    with ToolServer() as server, NetworkGuard() as guard:
        port = server.httpd.server_address[1]
        with urllib.request.urlopen(f"{server.url}/orders/A-1", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(LiveCallBlockedError, match="no server of this test listens on"):
            socket.create_connection(("127.0.0.1", free_port), timeout=1)
    assert guard.attempts == [
        f"connect to 127.0.0.1:{free_port}, a loopback port no server of this test listens on"
    ]
    assert port != free_port


def test_allowed_hosts_are_reachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    with NetworkGuard(allow_hosts=(f"127.0.0.1:{free_port}", "*.internal.test")) as guard:
        with pytest.raises(ConnectionRefusedError):  # allowed: the connect is really tried
            socket.create_connection(("127.0.0.1", free_port), timeout=1)
        with pytest.raises(OSError):  # allowed: the name is looked up (and not found)
            socket.getaddrinfo("db.internal.test", 5432)
    assert guard.attempts == []
