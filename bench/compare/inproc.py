"""In-process callers: N threads calling a blocking function in a loop, as a user's code would.

Used inside a node process (tsconsensus's ``execute_command``, pysyncobj's replicated method with
``sync=True``), so the figures include what the calling threads cost the node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .stats import Figures, summarize


def run_callers(call: Callable[[int, int], None], clients: int, seconds: float) -> Figures:
    """``clients`` threads each calling ``call(client, n)`` until ``seconds`` pass.

    A call that raises counts as an error (the thread goes on).
    """
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(c: int) -> None:
        mine = latencies[c]
        n = 0
        start.wait()
        while time.perf_counter() < stop_at[0]:
            began = time.perf_counter()
            try:
                call(c, n)
            except Exception:  # a failed call is a figure, not the end of the run
                errors[c] += 1
            else:
                mine.append(time.perf_counter() - began)
            n += 1

    threads = [
        threading.Thread(target=worker, args=(c,), name=f"caller-{c}", daemon=True)
        for c in range(clients)
    ]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return summarize([x for mine in latencies for x in mine], elapsed, sum(errors))
