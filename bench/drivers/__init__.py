"""One driver per system benchmarked. Each runs as `python -m bench.drivers.<name> ...` in that system's
own virtual environment, starts its worker process(es), runs one workload and prints one JSON line."""
