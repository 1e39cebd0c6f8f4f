"""A pysyncobj member as a Python user would write one, with a tiny HTTP front for the bench.

    python -m bench.compare.pysyncobj_node --self HOST:PORT --partners H:P,H:P
        --http-port N --journal FILE --dump FILE

The replicated object is a dict behind one ``@replicated`` method; batching is off
(``appendEntriesUseBatch=False``) and the journal is on (``journalFile``; pysyncobj never
fsyncs it); ``bindAddress`` is the member's own address, as several members share a machine.
pysyncobj has no command port, so the process serves a small HTTP/1.1 front on
``--http-port`` (keep-alive, Content-Length framing) that speaks the same requests as
tsconsensus's command port:
- ``POST /v1/execute`` ``{"name": "set", "args": {key: value, ...}}``: a replicated call
  (forwarded to the leader by pysyncobj), answered once applied; ``{"name": "get", "args":
  {"key": K}}``: this member's own copy (pysyncobj has no linearizable read);
- ``GET /v1/status``: this member's view (leader, ready, quorum, applied index);
- ``POST /bench/inproc`` ``{"clients": N, "seconds": S}``: (b), N threads calling the
  replicated method with ``sync=True`` in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

from . import payloads
from .inproc import run_callers

CALL_TIMEOUT_S = 10.0


class KeyValue(SyncObj):  # type: ignore[misc]
    """The replicated dict."""

    def __init__(self, self_address: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_address, partners, conf)
        self._data: dict[str, Any] = {}

    @replicated  # type: ignore[misc,untyped-decorator,unused-ignore]
    def set_items(self, items: dict[str, Any]) -> dict[str, Any]:
        previous = {k: self._data.get(k) for k in items}
        self._data.update(items)
        return previous

    def get_value(self, key: str) -> Any:
        return self._data.get(key)


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


class Front:
    """The HTTP front of one member."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def _replicate(self, items: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[Any, int]] = loop.create_future()

        def callback(result: Any, error: int) -> None:
            def settle() -> None:
                if not done.done():
                    done.set_result((result, error))

            loop.call_soon_threadsafe(settle)

        self.kv.set_items(items, callback=callback)
        try:
            result, error = await asyncio.wait_for(done, CALL_TIMEOUT_S)
        except asyncio.TimeoutError:
            return 503, {"result": None, "error": "timed out"}
        if error != FAIL_REASON.SUCCESS:
            return 503, {"result": None, "error": f"pysyncobj failure {error}"}
        return 200, {"result": result, "error": None}

    def _status(self) -> dict[str, Any]:
        leader = self.kv._getLeader()
        return {
            "self": str(self.kv.selfNode),
            "leader": str(leader) if leader is not None else None,
            "ready": bool(self.kv.isReady()),
            "has_quorum": bool(self.kv.hasQuorum),
            "applied": int(self.kv.raftLastApplied),
            "commit": int(self.kv.raftCommitIndex),
        }

    async def route(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if method == "GET" and path == "/v1/status":
            return 200, self._status()
        if method != "POST":
            return 405, {"error": "method not allowed"}
        try:
            request = json.loads(body)
        except ValueError:
            return 400, {"error": "malformed JSON"}
        if path == "/v1/execute":
            name, args = request.get("name"), request.get("args")
            if name == "set" and isinstance(args, dict):
                return await self._replicate(args)
            if name == "get" and isinstance(args, dict):
                return 200, {"result": self.kv.get_value(str(args.get("key"))), "error": None}
            return 400, {"error": f"unknown command {name!r}"}
        if path == "/bench/inproc":
            figures = await asyncio.to_thread(
                run_callers, self._sync_call, int(request["clients"]), float(request["seconds"])
            )
            return 200, {"figures": figures.to_json()}
        return 404, {"error": "not found"}

    def _sync_call(self, client: int, n: int) -> None:
        key, value = payloads.client_key(client), f"{n:0{payloads.VALUE_BYTES}d}"
        self.kv.set_items({key: value}, sync=True, timeout=CALL_TIMEOUT_S)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length)
                status, answer = await self.route(method, path, body)
                payload = _json(answer)
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def _main(args: argparse.Namespace) -> None:
    conf = SyncObjConf(
        appendEntriesUseBatch=False,
        journalFile=args.journal,
        fullDumpFile=args.dump,
        bindAddress=args.self,  # else it binds 0.0.0.0: one member per port and machine
    )
    partners = [p for p in args.partners.split(",") if p]
    kv = KeyValue(args.self, partners, conf)
    front = Front(kv)
    host = args.self.rsplit(":", 1)[0]
    server = await asyncio.start_server(front.serve, host, args.http_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        with contextlib.suppress(Exception):
            kv.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self", required=True)
    parser.add_argument("--partners", default="")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--dump", required=True)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
