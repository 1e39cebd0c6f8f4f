"""The small HTTP server's limits, on a real socket (loopback), with a fake handler."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tsconsensus._http import HttpServer, Request, Response
from tsconsensus._loop import LoopThread

from .conftest import unique_loopback_base
from .helpers import eventually

PORT = 18999


@contextlib.contextmanager
def serving(**overrides: Any) -> Iterator[HttpServer]:
    """An HttpServer on a fresh loopback address; ``<base>.99`` is the address it denies."""
    host = unique_loopback_base()
    denied = host.rsplit(".", 1)[0] + ".99"

    async def echo(request: Request) -> Response:
        return Response(200, {"len": len(request.body), "path": request.path})

    async def boom(request: Request) -> Response:
        raise RuntimeError("secret detail")

    async def authorize(ip: str, port: int) -> bool:
        return ip != denied

    loop = LoopThread("test-http")
    options: dict[str, Any] = {
        "name": "test",
        "host": host,
        "port": PORT,
        "routes": {("POST", "/echo"): echo, ("GET", "/boom"): boom},
        "authorize": authorize,
        "max_body_bytes": 1000,
        "read_timeout_s": 0.5,
        **overrides,
    }
    http = HttpServer(**options)
    loop.run(http.start())
    try:
        yield http
    finally:
        loop.run(http.stop())
        loop.stop()


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    with serving() as http:
        yield http.host, http.port


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


def _near(host: str, last: int) -> str:
    return host.rsplit(".", 1)[0] + f".{last}"


def test_ambiguous_or_malformed_framing_is_refused(server: tuple[str, int]) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\n"
    cases = [
        (head + b"Content-Length: 4_5\r\n\r\n" + b"a" * 45, 400),
        (head + b"Content-Length: +45\r\n\r\n" + b"a" * 45, 400),
        (head + b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde", 400),
        (head + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),  # repeated
        (head + b"Content-Length: 3, 5\r\n\r\nabcde", 400),
        (head + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", 400),
        (head + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 411),
        (head + b"Transfer-Encoding: gzip\r\n\r\n", 411),
        (head + b" Folded: header\r\n\r\n", 400),
        (b"GET /echo HTTP/2.0\r\nHost: x\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", 400),
        (b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ]
    for raw, status in cases:
        response = exchange(server, raw)
        assert status_of(response) == status, (raw[:60], response[:120])
        assert "error" in body_of(response)
        assert response.count(b"HTTP/1.1 ") == 1, "the connection must close after a refusal"


def test_http_1_0_gets_one_answer_and_connection_close(server: tuple[str, int]) -> None:
    one = b"POST /echo HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc"
    started = time.monotonic()
    response = exchange(server, one + one)  # reads until the server closes
    assert time.monotonic() - started < 0.4, "closed by the server, not by the read deadline"
    assert response.count(b"HTTP/1.1 200") == 1
    assert b"Connection: close" in response.split(b"\r\n\r\n")[0]


def test_lf_only_requests_are_refused_at_once(server: tuple[str, int]) -> None:
    started = time.monotonic()
    response = exchange(server, b"POST /echo HTTP/1.1\nHost: x\nContent-Length: 3\n\nabc")
    assert status_of(response) == 400 and "CRLF" in str(body_of(response)["error"])
    assert time.monotonic() - started < 0.4, "answered, not left to the head deadline"


def test_pipelined_requests_are_served_in_order_before_a_bad_one(server: tuple[str, int]) -> None:
    good = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    raw = good % 1 + b"a" + good % 2 + b"bb" + b"POST /echo HTTP/1.1\r\nContent-Length: x\r\n\r\n"
    response = exchange(server, raw)
    assert response.count(b"HTTP/1.1 200") == 2 and response.count(b"HTTP/1.1 400") == 1
    assert response.index(b'"len":1') < response.index(b'"len":2') < response.index(b"HTTP/1.1 400")


def test_head_deadline_408_when_started_silent_close_when_idle(server: tuple[str, int]) -> None:
    assert status_of(exchange(server, b"POST /echo HTTP/1.1\r\nHost: x\r\n")) == 408
    assert exchange(server, b"") == b""  # an idle connection is closed without an answer


def test_the_deadline_is_per_wait_not_per_connection(server: tuple[str, int]) -> None:
    """Requests 0.3 s apart on one connection (the deadline is 0.5 s) for 1.5 s: every wait
    ends in time, so none is cut, though the connection outlives three deadlines; once the
    client goes quiet the connection closes within about one deadline."""
    one = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    with socket.create_connection(server, timeout=5, source_address=(server[0], 0)) as s:
        for _ in range(5):
            s.sendall(one)
            answer = s.recv(65536)
            assert status_of(answer) == 200, answer[:80]
            time.sleep(0.3)  # the client's pace, under the server's 0.5 s deadline
        s.sendall(one[:20])  # a head begun and never finished
        started = time.monotonic()
        answer = s.recv(65536)
        assert status_of(answer) == 408, answer[:80]
        assert time.monotonic() - started < 2.0


def test_expect_100_continue_is_honoured(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=5, source_address=(server[0], 0)) as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"abc")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert status_of(data) == 200 and body_of(data)["len"] == 3


def test_a_denied_flood_is_refused_at_accept_and_leaves_nothing_open() -> None:
    with serving() as http:
        target = (http.host, http.port)
        denied = _near(http.host, 99)
        sockets = []
        try:
            for _ in range(1200):  # idle, as in the report: they send nothing
                s = socket.create_connection(target, timeout=5, source_address=(denied, 0))
                sockets.append(s)
                assert http.open_connections <= 64  # max_connections_per_source
            statuses = []
            for s in sockets:  # each is answered and closed by the server, not held
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
                assert "error" in body_of(answer)
                statuses.append(status_of(answer))
            # 403 (not authorized) at accept, or 503 while 64 refusals are still closing
            assert set(statuses) <= {403, 503} and statuses[0] == 403
            eventually(lambda: http.open_connections == 0, what="denied connections closed")
            assert status_of(exchange(target, _ECHO)) == 200  # members still served
        finally:
            for s in sockets:
                s.close()


_ECHO = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nz"


def _open_idle(target: tuple[str, int], source: str, n: int) -> list[socket.socket]:
    return [
        socket.create_connection(target, timeout=5, source_address=(source, 0)) for _ in range(n)
    ]


def test_connections_are_capped_per_source_and_in_total() -> None:
    with serving(max_connections=5, max_connections_per_source=3, read_timeout_s=30) as http:
        target = (http.host, http.port)
        a, b, c = (_near(http.host, n) for n in (11, 12, 13))
        held = _open_idle(target, a, 3)
        try:
            eventually(lambda: http.open_connections == 3, what="three idle connections held")
            over = exchange(target, _ECHO, source=a)
            assert status_of(over) == 503 and f"from {a}" in str(body_of(over)["error"])
            held += _open_idle(target, b, 2)
            eventually(lambda: http.open_connections == 5, what="five connections held")
            full = exchange(target, _ECHO, source=c)
            assert status_of(full) == 503 and "limit 5" in str(body_of(full)["error"])
            held.pop(0).close()  # one of a's goes away: c gets in
            eventually(lambda: http.open_connections == 4, what="a closed connection released")
            assert status_of(exchange(target, _ECHO, source=c)) == 200
        finally:
            for s in held:
                s.close()
        eventually(lambda: http.open_connections == 0, what="everything released")


def test_a_silent_client_does_not_delay_others() -> None:
    with serving(read_timeout_s=30) as http:
        target = (http.host, http.port)
        silent = _open_idle(target, http.host, 20)
        try:
            partial = _open_idle(target, http.host, 1)[0]
            partial.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Len")  # and stops
            silent.append(partial)
            started = time.monotonic()
            for _ in range(10):
                assert status_of(exchange(target, _ECHO)) == 200
            assert time.monotonic() - started < 2.0
        finally:
            for s in silent:
                s.close()


_LOW_FD_SERVER = """
import asyncio, logging, resource, sys
from tsconsensus._http import HttpServer, Response
resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")

async def echo(request):
    return Response(200, {"len": len(request.body)})

async def allow(ip, port):
    return True

async def main():
    server = HttpServer(name="low-fd", host=sys.argv[1], port=int(sys.argv[2]),
                        routes={("POST", "/echo"): echo}, authorize=allow, max_body_bytes=100,
                        max_connections=1000, max_connections_per_source=1000,
                        read_timeout_s=60)
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_out_of_descriptors_backs_off_and_logs_once(tmp_path: Path) -> None:
    host = unique_loopback_base()
    target = (host, PORT)
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOW_FD_SERVER, host, str(PORT)],
            stdout=subprocess.PIPE,
            stderr=log_file,
        )
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        # 48 descriptors: the server runs out after about 40 idle connections; the rest wait
        # in the listen backlog, keeping the listener readable (the old accept loop spun here)
        held = [socket.create_connection(target, timeout=5) for _ in range(80)]
        eventually(
            lambda: "out of file descriptors" in log_path.read_text(),
            what="the server reports running out of descriptors",
        )
        before = _cpu_seconds(proc.pid)
        time.sleep(1.5)  # a measuring window, not a wait for a condition
        spent = _cpu_seconds(proc.pid) - before
        assert spent < 0.3, f"the accept loop spun: {spent:.2f}s of CPU in 1.5s"
        assert log_path.read_text().count("out of file descriptors") == 1, log_path.read_text()
        for s in held:
            s.close()
        held = []
        # descriptors come back: the server serves again
        eventually(lambda: status_of(exchange(target, _ECHO, source=host)) == 200, timeout=15)
        assert "Traceback" not in log_path.read_text()
    finally:
        for s in held:
            s.close()
        proc.kill()
        proc.wait(10)
