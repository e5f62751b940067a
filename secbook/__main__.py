"""Command line: ``python -m secbook <command>``; ``python -m secbook --help`` lists the commands."""
from .cli import main

raise SystemExit(main())
