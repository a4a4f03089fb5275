"""The service's processes, started natively for the tests, the benchmark and the demo.

`processes` starts and stops Redis, workers, Flower and the fake Halo with the commands the
containers run; `sentinel` adds a primary, a replica and three sentinels; `redis_acl` renders
the shipped Redis users file (`ops/redis/users.acl`); `demo` is `make demo`. None of it ships:
the worker, the producers and the operator tools never import it.
"""
