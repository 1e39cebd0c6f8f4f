"""One adapter per system under test (see base.System)."""
