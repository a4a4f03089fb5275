"""The tests, and the harness that starts the service's processes for them, the benchmark and
the demo (`tests.harness`). A package, imported from the repository root (`tests.integration`,
`tests.harness`); the unit tests alone are plain modules."""
