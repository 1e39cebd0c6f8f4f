"""Faulty key-value machines that node processes load by import path, to show that a fault run
fails when the cluster loses what it acknowledged (``tests.fault_machines:LossyKeyValue``)."""

from __future__ import annotations

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
