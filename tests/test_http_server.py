"""The small HTTP server's limits, on a real socket (loopback), with a fake handler."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tsconsensus._http import HttpServer, Request, Response
from tsconsensus._loop import LoopThread

from .conftest import unique_loopback_base


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    host = unique_loopback_base()
    denied = host.rsplit(".", 1)[0] + ".99"

    async def echo(request: Request) -> Response:
        return Response(200, {"len": len(request.body), "path": request.path})

    async def boom(request: Request) -> Response:
        raise RuntimeError("secret detail")

    async def authorize(ip: str, port: int) -> bool:
        return ip != denied

    loop = LoopThread("test-http")
    http = HttpServer(
        name="test",
        host=host,
        port=18999,
        routes={("POST", "/echo"): echo, ("GET", "/boom"): boom},
        authorize=authorize,
        max_body_bytes=1000,
        read_timeout_s=0.5,
    )
    loop.run(http.start())
    try:
        yield host, 18999
    finally:
        loop.run(http.stop())
        loop.stop()


def exchange(target: tuple[str, int], raw: bytes, source: str | None = None) -> bytes:
    with socket.create_connection(target, timeout=5, source_address=(source or target[0], 0)) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> dict[str, object]:
    return json.loads(response.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])  # type: ignore[no-any-return]


def test_keep_alive_serves_several_requests_on_one_connection(server: tuple[str, int]) -> None:
    one = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    last = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nz"
    response = exchange(server, one + one + last)
    assert response.count(b"HTTP/1.1 200") == 3


def test_limits_and_errors_are_json(server: tuple[str, int]) -> None:
    cases = [
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
        (b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
        (b"GET /x HTTP/1.1\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n", 400),
    ]
    for raw, status in cases:
        response = exchange(server, raw)
        assert status_of(response) == status, (raw[:40], response[:80])
        assert "error" in body_of(response)


def test_a_slow_body_times_out_with_408(server: tuple[str, int]) -> None:
    response = exchange(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    assert status_of(response) == 408


def test_a_failing_handler_is_a_500_without_its_details(server: tuple[str, int]) -> None:
    response = exchange(server, b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 500
    assert b"secret detail" not in response and b"Traceback" not in response


def test_a_denied_peer_gets_403_and_the_connection_closes(server: tuple[str, int]) -> None:
    denied = server[0].rsplit(".", 1)[0] + ".99"
    raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz" * 2
    response = exchange(server, raw, source=denied)
    assert status_of(response) == 403 and response.count(b"HTTP/1.1") == 1
