"""The `halo-jobs` command (`operators.cli`) and the operator tools behind it.

Owns: the command line and its output, the bulk submit of a file of jobs (`bulk`), preview,
replay of failed jobs (`replay`, `failed`), doctor (`doctor`, `diagnosis`, `batching`), health,
and the dead-letter list (`dead`).

Imports: `producers` for every producer operation (submit, wait, result); the worker's state only
through its operator API, `worker.operations`; the contract (`worker.models`, `worker.errors`,
`worker.settings`, `worker.connections`, and of `worker.keys` the record's key and the feed's
stream only); and the libraries preview and doctor read Halo with as
a job would (`worker.halo`, `worker.update`). It must not spell a Redis key of the worker, nor
import the modules that own them (`worker.results`, `worker.deadletters`, `worker.fleet`,
`worker.governor`, `worker.runtime`, ...) or the Celery app and tasks: a key can then be renamed
or a store split without touching an operator command. `tests/unit/test_import_rules.py` holds
it to that.
"""
