"""``python -m tsconsensus_cli``: the ``tsc`` CLI without its console script."""

from .app import main

main()
