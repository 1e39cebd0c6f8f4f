"""NodeAddress: the one place where host:port is parsed and formatted (pure unit)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsconsensus import InvalidAddressError, NodeAddress, is_admin_socket


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("100.64.0.1:6270", "100.64.0.1", 6270, "100.64.0.1:6270"),
        ("[fd7a:115c:a1e0::1]:6270", "fd7a:115c:a1e0::1", 6270, "[fd7a:115c:a1e0::1]:6270"),
        ("[FD7A:0:0::0001]:1", "fd7a::1", 1, "[fd7a::1]:1"),  # canonical spelling
        ("Node1.Example.ts.net:65535", "node1.example.ts.net", 65535, "node1.example.ts.net:65535"),
        ("localhost:06270", "localhost", 6270, "localhost:6270"),
    ],
)
def test_parse_and_format(text: str, host: str, port: int, shown: str) -> None:
    address = NodeAddress.parse(text)
    assert (address.host, address.port) == (host, port)
    assert str(address) == shown
    assert NodeAddress.parse(str(address)) == address


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.2:99999",
        "127.0.0.2:0",
        "host:abc",
        "host:",
        ":6270",
        "host",
        "host:4_5",
        "host:+45",
        "host: 45",
        "host:45 ",
        "host:٤٥",  # digits of another script: int() takes them, a port does not
        "fd7a::1:6270",  # IPv6 without brackets: ambiguous
        "[127.0.0.1]:6270",
        "[fd7a::1]6270",
        "999.1.1.1:6270",
        "bad_host:6270",
        "-leading.dash:6270",
        "a" * 300 + ":6270",
        "",
    ],
)
def test_bad_addresses_are_errors_that_name_the_input(text: str) -> None:
    with pytest.raises(InvalidAddressError) as info:
        NodeAddress.parse(text)
    assert isinstance(info.value, ValueError)
    assert repr(text[:40])[:-1] in str(info.value)


def test_construction_validates_too() -> None:
    assert str(NodeAddress("fd7a::1", 80)) == "[fd7a::1]:80"
    assert NodeAddress("10.0.0.1", 1).with_port(2) == NodeAddress("10.0.0.1", 2)
    for host, port in [("10.0.0.1", 0), ("10.0.0.1", 70000), ("", 1), ("a b", 1)]:
        with pytest.raises(InvalidAddressError):
            NodeAddress(host, port)
    with pytest.raises(InvalidAddressError):
        NodeAddress("10.0.0.1", True)  # a bool is not a port


@given(st.text(max_size=40))
def test_parse_never_raises_anything_else(text: str) -> None:
    try:
        address = NodeAddress.parse(text)
    except InvalidAddressError:
        return
    assert NodeAddress.parse(str(address)) == address


@given(st.ip_addresses(), st.integers(1, 65535))
def test_every_ip_and_port_round_trips(ip: object, port: int) -> None:
    address = NodeAddress(str(ip), port)
    assert NodeAddress.parse(str(address)) == address


def test_only_a_unix_address_names_an_admin_socket() -> None:
    assert is_admin_socket("unix:/var/lib/tsconsensus/admin.sock")
    for tcp in ("100.64.0.1:6271", "[fd7a::1]:6271", "http://node1:6271", "unixbox:6271"):
        assert not is_admin_socket(tcp), tcp
