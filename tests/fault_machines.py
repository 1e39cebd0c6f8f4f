"""Faulty key-value machines that node processes load by import path, to show that a fault run
fails when the cluster loses what it acknowledged (``tests.fault_machines:LossyKeyValue``) or
when replicas differ (``tests.fault_machines:DivergentKeyValue``)."""

from __future__ import annotations

import os

from tsconsensus import Command, KeyValueMachine
from tsconsensus.types import JSON


class LossyKeyValue(KeyValueMachine):
    """Acknowledges every twentieth integer ``set`` of one key without storing it: the same on
    every node (replicas agree), so only the clients' history can show the loss."""

    def apply(self, command: Command) -> JSON:
        args = command.args
        if command.name == "set" and isinstance(args, dict) and len(args) == 1:
            ((key, value),) = args.items()
            if isinstance(value, int) and value % 20 == 0:
                return {key: self.apply(Command("get", {"key": key}))}
        return super().apply(command)


class DivergentKeyValue(KeyValueMachine):
    """Answers like the built-in machine, but each process's state holds a key of its own:
    every read agrees, only the replicas' snapshots can tell them apart."""

    def __init__(self) -> None:
        super().__init__()
        super().apply(Command("set", {"_process": os.getpid()}))

    def restore(self, data: bytes) -> None:
        super().restore(data)
        super().apply(Command("set", {"_process": os.getpid()}))
