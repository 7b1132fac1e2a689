"""One worker process: its event loop's claim loop and the machinery around each job.

worker.py      the claim loop, slots, draining, recycling
side_tasks.py  the watch on the worker's side tasks: one that dies stops the worker
presence.py    the worker's self-report in its queue's worker list
outage.py      the worker's own writes riding out a Redis or Postgres outage
execution.py   running one claimed job to exactly one recorded outcome
soft_limit.py  the soft time limit's one-time interrupt
batching.py    group commit of status writes and finishes
sweeper.py     repair of status rows left stuck
"""
