"""``tsc``: the operator CLI of tsconsensus (a Typer app; uses only the public library API)."""
