"""The fleet of processes behind `python -m runner run`: the supervisor, its children, and what they share.

    launcher.py     embedded servers if needed, then the supervisor with the API and the workers
    supervisor.py   keeps one process per slot, restarts, recycles, pings its children
    metrics.py      Prometheus metrics, aggregated over the fleet (metrics_dir.py prepares their folder)
    logs.py         structlog configured once per entry point
    heap.py         the frozen start-up heap

Nothing here is imported at package import: metrics_dir must run before prometheus-client loads.
"""
