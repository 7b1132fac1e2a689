"""The process's one TLS context for outgoing HTTPS, made when this module is first imported.

httpx would build one per client, parsing certifi's CA bundle each time (about 50 ms and 2-3 MiB). Made once,
and in the zygote before it forks (runner.fleet.zygote preloads this module), every worker and the API share
it: they start sooner and copy less memory. Same trust as httpx's default (SSL_CERT_FILE / SSL_CERT_DIR, else
certifi's bundle).
"""

from __future__ import annotations

import ssl

import httpx

__all__ = ["CONTEXT"]

CONTEXT: ssl.SSLContext = httpx.create_ssl_context()
