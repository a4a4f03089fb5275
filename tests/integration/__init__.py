"""End-to-end tests: a real Redis, real worker processes and a fake Halo over HTTP."""
