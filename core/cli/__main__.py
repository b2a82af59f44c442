"""`python -m core.cli`: the same as the `assay` command."""

from core.cli.main import main

raise SystemExit(main())
