"""What an operator reads and does, written once: the command line (and, later, a dashboard and the API)
call these; none has SQL or Redis calls of its own.

Lists and histories come from the Postgres status rows (a `WHERE` and a keyset page, so a million rows
page as fast as ten); Redis supplies only live numbers (queue depth, the workers' own reports).

    overview.py  a queue at a glance: depth, oldest due job, running, retrying, failures, throughput
    workers.py   the live workers, from their presence reports
    jobs.py      jobs by status, name, a field of their arguments, time and error text; one job; cancel one
    history.py   one job in full: every attempt (worker, times, outcome, error, traceback) and its children
    actions.py   retry one or all matching, purge a queue (each after seeing the count), drain a worker
    alerts.yml   Prometheus alerting rules for the on-call (tested with promtool in tests/unit/test_alerts.py)
    doctor.py    is everything healthy: servers, schema, stuck rows, clock skew, embedded servers
"""
