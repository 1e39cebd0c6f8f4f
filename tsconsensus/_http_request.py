"""Reading HTTP/1.1 requests off one connection, parsed by ``httptools`` (llhttp, Node.js's
parser, in its strict default mode).

llhttp refuses what is malformed or ambiguous: ``Content-Length: 4_5`` or ``+45``, repeated
``Content-Length``, ``Content-Length`` with ``Transfer-Encoding``, bare LF line ends, obsolete
line folding, bad tokens and URLs. On top of it, the server's own rules:
- the head is at most ``MAX_HEADER_BYTES`` and must arrive within the deadline (408 once it
  started, a silent close for a connection that stays idle);
- only HTTP/1.0 and 1.1; no protocol upgrades (400);
- ``Transfer-Encoding`` is refused: 411 (send ``Content-Length``), or 400 when it comes with
  ``Content-Length`` (ambiguous);
- ``Content-Length`` is compared with the limit when the head is complete, before a byte of the
  body is kept (413), and the body must arrive within the deadline (408);
- keep-alive only for HTTP/1.1 without ``Connection: close``; HTTP/1.0 gets one exchange.
Any refusal is answered and then the connection is closed. Pipelined requests are served in
order; an error further down the pipe is answered after the requests before it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

MAX_HEADER_BYTES = 16 * 1024
_CHUNK = 64 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass
class Head:
    """A request head that passed the framing rules; its body may not be read yet."""

    method: str
    target: str
    headers: dict[str, str]
    content_length: int
    keep_alive: bool
    expects_continue: bool


@dataclass
class Refusal:
    """Answer ``status`` with a JSON error, then close the connection."""

    status: int
    message: str


@dataclass
class _Message:
    url: bytes = b""
    fields: list[tuple[bytes, bytes]] = field(default_factory=list)
    head_bytes: int = 0
    """Bytes of the head seen so far (request target and complete fields)."""
    unparsed: int = 0
    """Bytes fed while the head was incomplete, from the chunk after the one it began in."""
    head: Head | Refusal | None = None
    body: list[bytes] = field(default_factory=list)
    complete: bool = False


class _Stop(Exception):
    """Raised from a parser callback to stop parsing (the refusal is already recorded)."""


class _Expired(Exception):
    """Put into the stream by the deadline timer: the wait for a head or a body is over."""


class RequestReader:
    """Reads one request after another from ``reader``. One connection, one task.

    The parser calls the ``on_*`` methods while :meth:`_feed` runs; they only record.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        *,
        max_body: int,
        timeout_s: float,
        body_limits: Mapping[str, int] | None = None,
    ) -> None:
        self._reader = reader
        self._max_body = max_body
        self._body_limits = body_limits or {}
        self._timeout = timeout_s
        self._parser = httptools.HttpRequestParser(self)
        self._messages: deque[_Message] = deque()
        """Requests begun and not yet served, oldest first."""
        self._error: Refusal | None = None
        """Why parsing stopped; answered once the requests before it are served."""
        self._eof = False
        self._deadline = 0.0
        """When the wait under way must end (loop time); 0.0 while nothing is awaited."""
        self._timer: asyncio.TimerHandle | None = None

    async def read_head(self) -> Head | Refusal | None:
        """The next request's head; ``None`` when the peer closed or stayed idle."""

        def ready() -> bool:
            return bool(self._messages) and self._messages[0].head is not None

        if not ready() and not await self._wait(ready):
            if not self._messages:
                return None  # an idle keep-alive connection: nothing to answer
            return Refusal(408, "timed out reading the request head")
        if ready():
            return self._messages[0].head
        return self._error  # None: the peer went away, before or in the middle of a head

    async def read_body(self, head: Head, writer: asyncio.StreamWriter) -> bytes | Refusal | None:
        """The body announced by ``head``; ``None`` when the peer went away mid-body."""
        message = self._messages[0]
        if not message.complete:
            if head.expects_continue:
                writer.write(_CONTINUE)
            if not await self._wait(lambda: message.complete):
                return Refusal(408, "timed out reading the request body")
            if not message.complete:
                return self._error if not self._eof else None
        self._messages.popleft()
        return b"".join(message.body)

    def close(self) -> None:
        """Stop the deadline timer (the connection is done)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _wait(self, done: Callable[[], bool]) -> bool:
        """Read until ``done()``, the peer's EOF or a parse error; False when the deadline
        (``timeout_s`` from now) passed first.

        One timer per connection rather than one per wait: a wait only moves the deadline,
        and the timer, when it fires early, sets itself again for the deadline then current.
        ``asyncio.timeout`` per wait cost a timer handle and a cancel on every request.
        """
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self._timeout
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._expire, loop)
        try:
            await self._fill(done)
        except _Expired:
            return False
        finally:
            self._deadline = 0.0
        return True

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if not self._deadline:
            return  # nothing awaited: the next wait sets a timer again
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._expire, loop)
            return
        # wakes the read under way with the error (or fails the next one): the connection
        # is answered 408 or closed, never read again
        self._reader.set_exception(_Expired())

    async def _fill(self, done: Callable[[], bool]) -> None:
        while not done() and self._error is None and not self._eof:
            self._feed(await self._reader.read(_CHUNK))

    def _feed(self, chunk: bytes) -> None:
        if not chunk:
            self._eof = True
            return
        last = self._messages[-1] if self._messages else None
        try:
            self._parser.feed_data(chunk)
        except httptools.HttpParserCallbackError:
            assert self._error is not None  # only _Stop is raised from callbacks
        except httptools.HttpParserUpgrade:
            self._error = Refusal(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._error = Refusal(400, f"malformed request: {exc}")
        # Until its head completes, llhttp keeps the current field in memory: bound it.
        if self._messages and self._messages[-1] is last and last is not None and last.head is None:
            last.unparsed += len(chunk)
            if last.unparsed > MAX_HEADER_BYTES and self._error is None:
                self._error = Refusal(400, f"request headers exceed {MAX_HEADER_BYTES} bytes")

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._messages.append(_Message())

    def on_url(self, url: bytes) -> None:
        message = self._messages[-1]
        message.url += url
        message.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        message = self._messages[-1]
        message.fields.append((name, value))
        message.head_bytes += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        message = self._messages[-1]
        message.head = self._check(message)
        if isinstance(message.head, Refusal):
            self._error = message.head
            raise _Stop

    def on_body(self, body: bytes) -> None:
        self._messages[-1].body.append(body)

    def on_message_complete(self) -> None:
        self._messages[-1].complete = True

    def _check(self, message: _Message) -> Head | Refusal:
        if message.head_bytes > MAX_HEADER_BYTES:
            return Refusal(400, f"request headers exceed {MAX_HEADER_BYTES} bytes")
        version = self._parser.get_http_version()
        if version not in ("1.0", "1.1"):
            return Refusal(400, f"only HTTP versions 1.0 and 1.1 are served, not {version}")
        if (
            self._parser.should_upgrade()
        ):  # Upgrade or CONNECT: nothing here speaks another protocol
            return Refusal(400, "protocol upgrades are not supported")
        headers: dict[str, str] = {}
        for raw_name, raw_value in message.fields:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if "transfer-encoding" in headers:
            return Refusal(411, "Transfer-Encoding is not accepted; send a Content-Length body")
        length = int(headers.get("content-length", "0"))  # llhttp checked: digits only
        limit = self._max_body
        if self._body_limits:
            limit = self._body_limits.get(urlsplit(message.url.decode("latin-1")).path, limit)
        if length > limit:
            return Refusal(413, f"body of {length} bytes exceeds the limit of {limit}")
        method = self._parser.get_method().decode("ascii")
        return Head(
            method=method,
            target=message.url.decode("latin-1"),
            headers=headers,
            content_length=length,
            keep_alive=version == "1.1" and self._parser.should_keep_alive() and method != "HEAD",
            expects_continue=version == "1.1"
            and headers.get("expect", "").lower() == "100-continue",
        )
