"""`python -m fakehalo`: serve the fake Halo over HTTP (see `fakehalo.server.main`).

The fake is not installed with the worker, so it has no console script: run it from the
repository root (or with the root on PYTHONPATH), as `make demo`, the tests and the compose demo
image do.
"""

from fakehalo.server import main

raise SystemExit(main())
