"""One worker process: its event loop's claim loop and the machinery around each job.

worker.py      the claim loop, slots, draining, recycling, and its watched side tasks
execution.py   running one claimed job to exactly one recorded outcome
soft_limit.py  the soft time limit's one-time interrupt
batching.py    group commit of status writes and finishes
sweeper.py     repair of status rows left stuck
"""
