"""The `assay` command line: core.cli.main parses and dispatches; one module per area in
core.cli.commands. `python -m core.cli` is the same as `assay`."""
