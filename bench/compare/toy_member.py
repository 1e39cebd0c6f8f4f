"""The least a Python process can do per durable, replicated write: a yardstick, not Raft.

No terms, elections, log matching, authentication or state machine; one thread per process,
blocking sockets and ``selectors``, no asyncio, no thread hand-overs. What it keeps is the
path every replicated write must take: the leader answers ``POST`` requests on HTTP/1.1
keep-alive connections; for each one it sends a frame to both followers, writes and
``fdatasync``s it itself, and answers once a follower has acknowledged it (two copies of
three on disk). A follower writes and syncs each frame, then acknowledges it.
:mod:`bench.compare.floor` measures it beside etcd and tsconsensus.

    python -m bench.compare.toy_member follower HOST PORT DIR
    python -m bench.compare.toy_member leader HOST PORT DIR FOLLOWER_HOST:PORT FOLLOWER_HOST:PORT
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import sys

FRAME = struct.Struct("!QI")  # index, body length
ACK = struct.Struct("!Q")


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock


def _nodelay(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def follower(host: str, port: int, wal: int) -> None:
    server = _listen(host, port)
    while True:
        conn = _nodelay(server.accept()[0])
        buf = b""
        while data := conn.recv(1 << 16):
            buf += data
            while len(buf) >= FRAME.size:
                index, size = FRAME.unpack_from(buf)
                end = FRAME.size + size
                if len(buf) < end:
                    break
                os.write(wal, buf[:end])
                os.fdatasync(wal)
                conn.sendall(ACK.pack(index))
                buf = buf[end:]
        conn.close()


def _requests(buf: bytes) -> tuple[list[bytes], bytes]:
    """Complete request bodies at the front of ``buf``, and what is left."""
    bodies = []
    while (end := buf.find(b"\r\n\r\n")) >= 0:
        head, length = buf[:end].lower(), 0
        at = head.find(b"content-length:")
        if at >= 0:
            length = int(head[at + 15 :].split(b"\r\n", 1)[0])
        if len(buf) < end + 4 + length:
            break
        bodies.append(buf[end + 4 : end + 4 + length])
        buf = buf[end + 4 + length :]
    return bodies, buf


def leader(host: str, port: int, wal: int, followers: list[str]) -> None:
    links = []
    for address in followers:
        h, p = address.rsplit(":", 1)
        links.append(_nodelay(socket.create_connection((h, int(p)), source_address=(host, 0))))
    server = _listen(host, port)
    server.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ, "accept")
    for link in links:
        selector.register(link, selectors.EVENT_READ, "ack")
    acks = {link: b"" for link in links}  # bytes of a partial acknowledgement
    pending: dict[socket.socket, bytes] = {}
    waiting: dict[int, socket.socket] = {}  # index -> the client to answer
    index = 0
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "accept":
                client = _nodelay(server.accept()[0])
                selector.register(client, selectors.EVENT_READ, "client")
                pending[client] = b""
            elif key.data == "ack":
                data = sock.recv(1 << 16)
                if not data:
                    sys.exit("a follower closed its connection")
                buf = acks[sock] + data
                whole = len(buf) - len(buf) % ACK.size
                acks[sock] = buf[whole:]
                for (acked,) in ACK.iter_unpack(buf[:whole]):
                    client = waiting.pop(acked, None)  # the first ack makes two copies
                    if client is not None:
                        body = b'{"result":null,"error":null,"index":%d}' % acked
                        client.sendall(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                        )
            else:
                data = sock.recv(1 << 16)
                if not data:
                    selector.unregister(sock)
                    pending.pop(sock, None)
                    sock.close()
                    continue
                bodies, pending[sock] = _requests(pending[sock] + data)
                for body in bodies:
                    index += 1
                    frame = FRAME.pack(index, len(body)) + body
                    for link in links:
                        link.sendall(frame)
                    os.write(wal, frame)
                    os.fdatasync(wal)
                    waiting[index] = sock


def main(argv: list[str]) -> None:
    role, host, port, directory = argv[0], argv[1], int(argv[2]), argv[3]
    wal = os.open(os.path.join(directory, f"toy-{host}-{port}.wal"), os.O_WRONLY | os.O_CREAT)
    if role == "follower":
        follower(host, port, wal)
    else:
        leader(host, port, wal, argv[4:6])


if __name__ == "__main__":
    main(sys.argv[1:])
