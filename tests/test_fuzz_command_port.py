"""Property-based fuzz of a live node's command port (issue 10, item 4): malformed, truncated,
wrongly typed, huge and deeply nested bodies always get a 4xx JSON error, the node keeps
serving, and nothing reaches the log. Silent clients stay connected the whole time and delay
nobody."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsconsensus import MAX_JSON_DEPTH
from tsconsensus.testing import LocalCluster

from .helpers import http

Make = Callable[..., LocalCluster]
MAX_BODY = 4096

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
valid_bodies = st.fixed_dictionaries(
    {"name": st.sampled_from(["set", "get", "cas"]), "args": json_values}
).map(lambda d: json.dumps(d).encode())


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    body = draw(valid_bodies)
    return body[: draw(st.integers(0, len(body) - 1))]  # a strict prefix is never JSON


def _with(**fields: Any) -> bytes:
    return json.dumps({"name": "set", "args": {"k": 1}, **fields}).encode()


not_a_name = st.none() | st.booleans() | st.integers() | st.lists(st.text()) | st.just("")
wrong_types = st.one_of(
    not_a_name.map(lambda v: json.dumps({"name": v, "args": {}}).encode()),
    st.just(json.dumps({"args": {"k": 1}}).encode()),  # no name at all
    (st.integers() | st.lists(st.integers()) | st.just("")).map(lambda v: _with(request_id=v)),
    st.text(min_size=257, max_size=400).map(lambda v: _with(request_id=v)),
    (st.text() | st.booleans() | st.just(0) | st.just(-1) | st.just(301)).map(
        lambda v: _with(timeout_s=v)
    ),
    st.text(min_size=1, max_size=10)
    .filter(lambda k: k not in ("name", "args", "request_id", "timeout_s"))
    .map(lambda k: _with(**{k: 1})),
    (json_scalars | st.lists(json_values, max_size=3)).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b'{"name": "set", "args": {"k": NaN}}', b'{"name": "set", "args": Infinity}']),
)
huge = st.one_of(
    st.integers(MAX_BODY, 3 * MAX_BODY).map(lambda n: _with(args={"k": "x" * n})),
    st.integers(MAX_BODY, 2 * MAX_BODY).map(lambda n: json.dumps({"name": "x" * n}).encode()),
    st.integers(MAX_BODY // 2, MAX_BODY - 100).map(
        lambda n: json.dumps({"name": 7, "args": "x" * n}).encode()
    ),
)
deep = st.tuples(st.integers(MAX_JSON_DEPTH, 3000), st.sampled_from(["[", '{"a":'])).map(
    lambda d: (
        b'{"name": "set", "args": '
        + (d[1] * d[0]).encode()
        + b"1"
        + (b"]" if d[1] == "[" else b"}") * d[0]
        + b"}"
    )
)
hostile_bodies = st.one_of(
    st.binary(max_size=600),
    truncated(),
    wrong_types,
    huge,
    deep,
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def _applied(cluster: LocalCluster) -> tuple[int, int]:
    status = cluster.status(0)
    return status["applied_index"], status["commit_index"]


def _snapshot_bytes(cluster: LocalCluster) -> bytes:
    with cluster.monitor(0) as m:
        return m.snapshot()[1]


def test_fuzzed_bodies_are_4xx_json_errors_and_change_nothing(make_cluster: Make) -> None:
    cluster = make_cluster(1, command_overrides={"max_body_bytes": MAX_BODY})
    cluster.execute(0, "set", {"seed": 1})
    before, state = _applied(cluster), _snapshot_bytes(cluster)
    target = (cluster.addresses[0], cluster.ports.command)
    silent = [
        socket.create_connection(target, timeout=5, source_address=(cluster.addresses[0], 0))
        for _ in range(5)
    ]
    seen: dict[int, int] = {}
    try:
        with http(cluster, 0) as client:

            @settings(
                max_examples=300,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(body=hostile_bodies)
            def probe(body: bytes) -> None:
                started = time.monotonic()
                response = client.post(
                    "/v1/execute", content=body, headers={"Content-Type": "application/json"}
                )
                assert time.monotonic() - started < 5.0
                assert 400 <= response.status_code < 500, (body[:80], response.text[:200])
                error = response.json()["error"]
                assert isinstance(error, str) and error
                seen[response.status_code] = seen.get(response.status_code, 0) + 1

            probe()
            # the node still serves, at once, with five silent clients connected all along
            started = time.monotonic()
            health = client.get(f"http://{cluster.monitor_address(0)}/healthz")
            assert health.status_code == 200
            assert time.monotonic() - started < 1.0
    finally:
        for s in silent:
            s.close()
    assert _applied(cluster) == before, "a fuzzed body reached the log"
    assert _snapshot_bytes(cluster) == state
    assert set(seen) <= {400, 413} and seen.get(400, 0) > 0 and seen.get(413, 0) > 0, seen
    ok = cluster.execute(0, "set", {"after": "fuzz"})
    assert ok.error is None and ok.index > before[0]


def test_fuzzed_raw_requests_never_get_a_5xx_and_the_node_keeps_serving(
    make_cluster: Make,
) -> None:
    cluster = make_cluster(1, command_overrides={"max_body_bytes": MAX_BODY})
    before = _applied(cluster)
    target = (cluster.addresses[0], cluster.ports.command)
    prefix = st.sampled_from(
        [b"", b"POST /v1/execute HTTP/1.1\r\n", b"POST /v1/execute HTTP/1.1\r\nHost: x\r\n"]
    )

    @settings(max_examples=150, deadline=None, database=None)
    @given(raw=st.tuples(prefix, st.binary(max_size=300)).map(lambda t: t[0] + t[1]))
    def probe(raw: bytes) -> None:
        with socket.create_connection(
            target, timeout=5, source_address=(cluster.addresses[0], 0)
        ) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)  # the node sees the end: no head deadline to wait for
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        if answer:  # silence is fine for a peer that sent nothing parseable and left
            assert answer.startswith(b"HTTP/1.1 "), answer[:80]
            assert int(answer.split(b" ", 2)[1]) < 500, answer[:200]

    probe()
    with httpx.Client(
        transport=httpx.HTTPTransport(local_address=cluster.addresses[0]), timeout=5
    ) as client:
        assert client.get(f"http://{cluster.monitor_address(0)}/healthz").status_code == 200
    assert _applied(cluster) == before
