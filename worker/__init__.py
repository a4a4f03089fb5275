"""The service: Celery workers that run Update Halo Ticket jobs against Halo PSA.

Owns: the contract (`models`, `errors`, `settings`, `connections`, `publishing`), every Redis
key (`keys`) and the state behind it, the Halo client (`halo`), the job's lifecycle (`runner`,
`update`, `batch`) and the Celery glue (`app`, `tasks`).

What other packages may use of it: `producers` the contract and `handoff`; `operators` the
contract, `operations` (its API onto the worker's state) and the Halo libraries preview and
doctor need (`halo`, `update`). It must not import `producers` or `operators`.
"""
