"""A tsconsensus node whose process also runs the (b) callers of ``execute_command``.

    python -m bench.compare.tsc_inproc CLUSTER_DIR INDEX

Starts member INDEX of the :class:`~tsconsensus.testing.LocalCluster` in CLUSTER_DIR (its config
and state directory: it takes the place of that member's ``tsc node start`` process), prints
``{"ready": NODE_ID}``, then answers each JSON line ``{"clients": N, "seconds": S}`` on stdin
with ``{"figures": ...}``: N threads calling ``execute_command(Command("set", ...))`` for S
seconds. Stops the node (handing leadership over) at the end of stdin.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import tsconsensus as tsc
from tsconsensus.testing import LocalCluster

from . import payloads
from .inproc import run_callers


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    directory, index = Path(sys.argv[1]), int(sys.argv[2])
    config = LocalCluster.open(directory).config(index)
    node = tsc.start_from_config(config)
    try:
        node.wait_for_leader(timeout=60)
        print(json.dumps({"ready": node.node_id}), flush=True)

        def call(client: int, n: int) -> None:
            key = payloads.client_key(client)
            value = f"{n:0{payloads.VALUE_BYTES}d}"
            outcome = node.execute_command(tsc.Command("set", {key: value}))
            if outcome.error is not None:
                raise RuntimeError(outcome.error)

        for line in sys.stdin:
            request = json.loads(line)
            figures = run_callers(call, int(request["clients"]), float(request["seconds"]))
            print(json.dumps({"figures": figures.to_json()}), flush=True)
    finally:
        node.stop()


if __name__ == "__main__":
    main()
