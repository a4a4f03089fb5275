"""The `halo-jobs` command and the operator tools behind it."""
