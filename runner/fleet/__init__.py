"""The fleet of processes behind `python -m runner run`: the supervisor, its children, and what they share.

    launcher.py     embedded servers if needed, then the supervisor with the API and the workers
    supervisor.py   keeps one process per slot, restarts, recycles, kills children that hang
    control.py      the control pipe: a child's retiring notice and heartbeat (and its blocked-loop report)
    metrics.py      Prometheus metrics, aggregated over the fleet (metrics_dir.py prepares their folder)
    logs.py         structlog configured once per entry point
    heap.py         the frozen start-up heap
    zygote.py       the pre-imported copy of the supervisor that forks the children (pages shared)
    forked.py       the supervisor's handle on a forked child: adopted (subreaper), waited for on a pidfd
    proctitle.py    a forked child's command line, as ps and psutil show it

Nothing here is imported at package import: metrics_dir must run before prometheus-client loads.
"""
