"""A replicated counter: three nodes in one process, on a static tailnet of loopback addresses."""

import json
import secrets
import tempfile

import tsconsensus as tsc


class Counter:
    """apply() must be deterministic: same commands in the same order, same state everywhere."""

    def __init__(self) -> None:
        self.value = 0

    def apply(self, command: tsc.Command) -> tsc.JSON:
        if command.name == "add":
            self.value += int(command.args["by"])  # a raise here becomes CommandResult.error
            return self.value
        raise ValueError(f"unknown command {command.name!r}")

    def snapshot(self) -> bytes:
        return json.dumps(self.value).encode()

    def restore(self, data: bytes) -> None:
        self.value = json.loads(data)


def main(base: str = "127.0.0") -> None:
    peers = [tsc.StaticPeer(f"{base}.{i}", tags=("tag:counter",)) for i in (1, 2, 3)]
    secret = secrets.token_hex(16)  # the same on every node: it keys every Raft frame's MAC
    state = tempfile.TemporaryDirectory()  # each node keeps its log and snapshots in a directory
    nodes = []
    for i, peer in enumerate(peers, 1):
        config = tsc.Config(
            cluster=tsc.ClusterConfig(tag="tag:counter", secret=secret),
            storage=tsc.StorageConfig(state_dir=f"{state.name}/node{i}"),
        )
        tailnet = tsc.StaticTailnet(peer.address, peers)
        nodes.append(tsc.start(tailnet, Counter(), "tag:counter", config))
    try:
        nodes[0].wait_for_leader(timeout=15)
        for node in nodes:  # any node may execute: followers forward to the leader
            outcome = node.execute_command(tsc.Command("add", {"by": 10}))
            print(node.node_id, "->", outcome.result, "at index", outcome.index)
        failed = nodes[1].execute_command(tsc.Command("multiply", {"by": 2}))
        print("error comes back as data:", failed.error)
    finally:
        for node in nodes:
            node.stop()
        state.cleanup()


if __name__ == "__main__":
    main()
