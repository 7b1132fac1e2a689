"""Outgoing HTTP: the process's one httpx client, over our own connection pool (see pool.py)."""

import httpx

from runner.http.pool import ConnectionPool, PooledTransport

__all__ = ["ConnectionPool", "PooledTransport", "new_client"]


def new_client(timeout: httpx.Timeout | float = 5.0) -> httpx.AsyncClient:
    """The httpx client a process holds for its life (runner.resources opens it), over `PooledTransport`
    with the process's one TLS context."""
    from runner.tls import CONTEXT

    return httpx.AsyncClient(transport=PooledTransport(CONTEXT, max_connections=200, max_keepalive=50), timeout=timeout)
