"""The namespace helpers live in :mod:`tsconsensus.testing.netns` (the fault runner ships them)."""

from __future__ import annotations

from tsconsensus.testing.netns import Hosts, netns_available

__all__ = ["Hosts", "netns_available"]
