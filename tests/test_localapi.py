"""The LocalAPI client and the authorization rules, against the emulator (a real HTTP server on
a unix socket); no cluster needed."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tsconsensus import Authorizer, TailnetError
from tsconsensus.localapi import LocalAPIClient, LocalAPITailnet
from tsconsensus.testing import EmulatedNode, EmulatedTailnet, LocalAPIEmulator

TAG = "tag:db"


@pytest.fixture
def tailnet() -> EmulatedTailnet:
    return EmulatedTailnet(
        [
            EmulatedNode("self", ["100.64.0.1", "fd7a:115c:a1e0::1"], [TAG]),
            EmulatedNode("peer", ["100.64.0.2", "fd7a:115c:a1e0::2"], [TAG, "tag:other"]),
            EmulatedNode("laptop", ["100.64.0.9"], []),
        ]
    )


@pytest.fixture
def emulator(tmp_path: Path, tailnet: EmulatedTailnet):
    emu = tailnet.emulator("self", tmp_path / "tailscaled.sock").start()
    yield emu
    emu.stop()


def test_status_is_typed_and_tags_absent_means_untagged(emulator: LocalAPIEmulator) -> None:
    client = LocalAPIClient(emulator.socket_path)
    status = client.status()
    assert status.backend_state == "Running"
    assert status.self_peer.hostname == "self" and status.self_peer.is_self
    assert status.self_peer.addresses == ("100.64.0.1", "fd7a:115c:a1e0::1")
    by_name = {p.hostname: p for p in status.peers}
    assert by_name["peer"].tags == (TAG, "tag:other")
    assert by_name["laptop"].tags == ()
    raw = httpx.Client(transport=httpx.HTTPTransport(uds=emulator.socket_path))
    body = raw.get("http://local-tailscaled.sock/localapi/v0/status").json()
    laptop = next(p for p in body["Peer"].values() if p["HostName"] == "laptop")
    assert "Tags" not in laptop  # as tailscaled: the key is absent, not empty


def test_status_is_cached_briefly(emulator: LocalAPIEmulator) -> None:
    client = LocalAPIClient(emulator.socket_path, status_ttl_s=0.3)
    for _ in range(20):
        client.status()
    assert emulator.requests == 1
    time.sleep(0.35)
    client.status()
    assert emulator.requests == 2


def test_requests_need_the_localapi_host_and_no_origin(emulator: LocalAPIEmulator) -> None:
    raw = httpx.Client(transport=httpx.HTTPTransport(uds=emulator.socket_path))
    assert raw.get("http://example.com/localapi/v0/status").status_code == 403
    assert (
        raw.get(
            "http://local-tailscaled.sock/localapi/v0/status", headers={"Origin": "http://x"}
        ).status_code
        == 403
    )


def test_backend_not_running_and_missing_daemon_are_clear_errors(
    emulator: LocalAPIEmulator, tmp_path: Path
) -> None:
    emulator.backend_state = "NeedsLogin"
    with pytest.raises(TailnetError, match=r"not running \(BackendState=NeedsLogin\)"):
        LocalAPIClient(emulator.socket_path).status()
    with pytest.raises(TailnetError, match="cannot reach tailscaled"):
        LocalAPIClient(str(tmp_path / "absent.sock")).status()


def test_whois_tun_mode_by_address_and_userspace_mode_by_port(
    emulator: LocalAPIEmulator,
) -> None:
    net = LocalAPITailnet(emulator.socket_path)
    assert net.whois("100.64.0.2", 41000).hostname == "peer"  # type: ignore[union-attr]
    assert net.whois("fd7a:115c:a1e0::2", 41000).hostname == "peer"  # type: ignore[union-attr]
    assert net.whois("::ffff:100.64.0.2", 1).hostname == "peer"  # type: ignore[union-attr]
    # userspace networking: peers arrive from 127.0.0.1:PORT; only whois knows which one.
    emulator.map_userspace("127.0.0.1:50123", "peer")
    assert net.whois("127.0.0.1", 50123).hostname == "peer"  # type: ignore[union-attr]
    assert net.whois("127.0.0.1", 50124) is None  # a local process, not the tailnet


def test_whois_retries_briefly_until_the_userspace_mapping_lands(
    emulator: LocalAPIEmulator,
) -> None:
    net = LocalAPITailnet(emulator.socket_path)
    threading.Timer(0.1, emulator.map_userspace, ("127.0.0.1:50200", "peer")).start()
    assert net.whois("127.0.0.1", 50200).hostname == "peer"  # type: ignore[union-attr]


def test_authorization_units(emulator: LocalAPIEmulator, tailnet: EmulatedTailnet) -> None:
    auth = Authorizer(
        LocalAPITailnet(emulator.socket_path, LocalAPIClient(emulator.socket_path, status_ttl_s=0)),
        TAG,
    )
    # allows a tagged peer on both its IPv4 and IPv6 address, and this node itself
    assert auth.allows("100.64.0.2", 1)
    assert auth.allows("fd7a:115c:a1e0::2", 1)
    assert auth.allows("100.64.0.1", 1)
    # denies untagged nodes and strangers
    assert not auth.allows("100.64.0.9", 1)
    assert not auth.allows("100.64.0.77", 1)
    assert not auth.allows("not-an-ip", 1)
    # untagging takes effect at once (status not cached here)
    tailnet.set_tags("peer", ["tag:other"])
    assert not auth.allows("100.64.0.2", 1)
    # backend not running: deny everyone
    tailnet.set_tags("peer", [TAG])
    emulator.backend_state = "Stopped"
    assert not auth.allows("100.64.0.2", 1)


def test_no_status_denies_all(tmp_path: Path) -> None:
    auth = Authorizer(LocalAPITailnet(str(tmp_path / "no-daemon.sock")), TAG)
    assert not auth.allows("100.64.0.2", 1)
    assert not auth.allows("100.64.0.2", 0, patient=False)


def test_emulator_socket_is_a_real_unix_socket(emulator: LocalAPIEmulator) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(emulator.socket_path)
        s.sendall(b"GET /localapi/v0/status HTTP/1.1\r\nHost: local-tailscaled.sock\r\n\r\n")
        assert s.recv(12).startswith(b"HTTP/1.")


def test_whois_answers_are_cached_per_address(emulator: LocalAPIEmulator) -> None:
    emulator.map_userspace("127.0.0.1:50300", "peer")
    client = LocalAPIClient(emulator.socket_path, whois_ttl_s=30)
    client.status()
    before = emulator.requests
    for _ in range(5):
        assert client.whois("127.0.0.1", 50300).hostname == "peer"  # type: ignore[union-attr]
    assert emulator.requests == before + 1
    client.whois("127.0.0.1", 50301)  # another address: its own lookup (a miss, retried)
    assert emulator.requests > before + 1
