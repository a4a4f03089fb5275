"""The benchmark and the soak: the worker's figures against its targets, and its memory and
queues over a long run.

`python -m bench` (`make bench`) runs the benchmark's scenarios (`costs`, `budget`, `scale`,
`replicas`) on the rig (`rig`) and writes the report (`report`); `python -m bench.soak`
(`make soak`) runs the soak, `python -m bench.soak_memory` shows where a worker's memory grows.
Each run starts its own Redis, fake Halo and worker processes with the test harness
(`tests.harness.processes`). Neither ships: the worker, the producers and the operator tools
never import it.
"""
