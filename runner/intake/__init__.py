"""Intakes: jobs sent by other systems' unchanged producers, run as this runner's jobs, with their senders
told the outcome where they look. For a migration without a flag day.

    celery_message.py  a Celery protocol 2 message from kombu's Redis transport, read without unpickling
    celery_intake.py   Celery's queue lists -> runner jobs (atomic claim, re-driven after a crash)
    arq_intake.py      arq's queue -> runner jobs (woken by keyspace notifications)
    handover.py        what both do with a job they accept: its registered job, its arguments named, enqueue + row
    results.py         what Celery's AsyncResult and arq's Job read: started, retrying, ended
    process.py         the intake process the supervisor runs (CELERY_INTAKE, ARQ_INTAKE)
"""
