"""The `diffplan` command line (installed as `diffplan_cli`): parses, calls diffplan.*, renders."""
