"""What a request looks like for each client style, and how its success is recognized.

Styles:
- ``tsc``: ``POST /v1/execute`` with a JSON command (tsconsensus's command port; the small HTTP
  front of the pysyncobj nodes speaks the same);
- ``etcd-gw``: etcd's JSON gateway (``/v3/kv/put``, ``/v3/kv/range``, ``/v3/kv/txn``), keys and
  values in base64;
- ``etcd-grpc``: etcd's gRPC ``KV/Put`` and ``KV/Range`` with hand-encoded protobuf messages
  (``key`` is field 1 and ``value`` field 2 of both PutRequest and RangeRequest).

Every write sets one key of the client's own (``c<client>``) to a 16-byte value.
"""

from __future__ import annotations

import base64
import json

STYLES = ("tsc", "etcd-gw", "etcd-grpc")
VALUE_BYTES = 16

GRPC_PUT = "/etcdserverpb.KV/Put"
GRPC_RANGE = "/etcdserverpb.KV/Range"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field: tag, varint length, bytes."""
    out = bytearray([number << 3 | 2])
    n = len(data)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + data


def client_key(client: int) -> str:
    return f"c{client}"


def write_request(style: str, client: int, n: int) -> tuple[str, bytes]:
    """(path or gRPC method, body) of the ``n``-th write of ``client``."""
    key, value = client_key(client), f"{n:0{VALUE_BYTES}d}"
    if style == "tsc":
        return "/v1/execute", json.dumps({"name": "set", "args": {key: value}}).encode()
    if style == "etcd-gw":
        return "/v3/kv/put", json.dumps({"key": _b64(key), "value": _b64(value)}).encode()
    if style == "etcd-grpc":
        return GRPC_PUT, _field(1, key.encode()) + _field(2, value.encode())
    raise ValueError(f"unknown style {style!r}")


def read_request(style: str, client: int) -> tuple[str, bytes]:
    """(path or gRPC method, body) of a read of ``client``'s key (linearizable by default)."""
    key = client_key(client)
    if style == "tsc":
        return "/v1/execute", json.dumps({"name": "get", "args": {"key": key}}).encode()
    if style == "etcd-gw":
        return "/v3/kv/range", json.dumps({"key": _b64(key)}).encode()
    if style == "etcd-grpc":
        return GRPC_RANGE, _field(1, key.encode())
    raise ValueError(f"unknown style {style!r}")


def bulk_request(style: str, items: dict[str, str]) -> tuple[str, bytes]:
    """One request that sets every key of ``items`` (a tsconsensus ``set``, an etcd txn)."""
    if style == "tsc":
        return "/v1/execute", json.dumps({"name": "set", "args": items}).encode()
    if style == "etcd-gw":
        puts = [{"request_put": {"key": _b64(k), "value": _b64(v)}} for k, v in items.items()]
        return "/v3/kv/txn", json.dumps({"success": puts}).encode()
    raise ValueError(f"style {style!r} has no bulk request")


def ok(style: str, status: int, body: bytes) -> bool:
    """Whether an HTTP response is a success for ``style``."""
    if status != 200:
        return False
    if style == "tsc":
        return b'"error":null' in body or b'"error": null' in body
    if style == "etcd-gw":
        return b'"header"' in body and b'"error"' not in body
    raise ValueError(f"style {style!r} is not HTTP")
