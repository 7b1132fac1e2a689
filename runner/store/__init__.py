"""Postgres: the record of every job.

jobs.py        the `runner_jobs` status rows, moved only forwards by guarded SQL
migrations.py  versioned `sql/NNNN_*.sql` files applied under an advisory lock
"""
