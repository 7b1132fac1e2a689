"""The runner's configuration, read once per entry point from the environment (and `.env`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "queue_weights", "server_addresses"]


def server_addresses(value: str, setting: str = "REDIS_SENTINELS") -> list[tuple[str, int]]:
    """REDIS_SENTINELS or REDIS_CLUSTER_NODES ("host:port,host:port,...", an IPv6 host in brackets) as
    (host, port) pairs."""
    found = []
    for entry in (e.strip() for e in value.split(",")):
        host, _, port = entry.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(
                f"{setting} must be a comma-separated list of host:port (e.g. 10.0.0.1:6379,10.0.0.2:6379,"
                f"redis-c:6379); {entry!r} is not a host and a port 1-65535: fix that entry"
            )
        found.append((host, int(port)))
    return found


def queue_weights(value: str) -> list[tuple[str, int]]:
    """QUEUES ("storymimi:3,media:1"; a queue without a weight has 1) as (queue, weight) pairs. A weight is
    the digits after a name's last colon, so a queue whose name ends in ":<digits>" needs its weight given."""
    found: dict[str, int] = {}
    for entry in (e.strip() for e in value.split(",")):
        name, _, weight = entry.rpartition(":")
        if not weight.strip().isdigit():
            name, weight = entry, "1"
        name, weight = name.strip(), weight.strip()
        if not name or "{" in name or "}" in name or not weight.isdigit() or not 1 <= int(weight) <= 1000:
            raise ValueError(
                f"QUEUES must be a comma-separated list of queue[:weight] (e.g. storymimi:3,media:1), each queue "
                f"named without braces and weighted 1-1000; {entry!r} is not: fix that entry"
            )
        if name in found:
            raise ValueError(f"QUEUES names the queue {name!r} twice: give each queue once, with its weight")
        found[name] = int(weight)
    return list(found.items())


class Settings(BaseSettings):
    """The runner's settings: servers, queue, workers, API process. Each field maps to the upper-case
    environment variable. A registry's jobs extend this class with their own (see `Registry.settings`)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Servers. Unset means: start embedded ones under DATA_DIR (see runner.devservers).
    redis_url: str | None = None
    database_url: str | None = None
    redis_sentinels: str | None = Field(
        None, description="use Sentinel: host:port,host:port,...; every connection asks them for the master "
        "(REDIS_URL, if set, then gives only the database, user, password and TLS)",
    )  # fmt: skip
    redis_sentinel_master: str = Field("mymaster", min_length=1, description="the master's name in Sentinel")
    redis_cluster_nodes: str | None = Field(
        None, description="use Redis Cluster: host:port,host:port,... of some of its nodes (the client learns the "
        "rest); REDIS_URL, if set, then gives only the user, password and TLS",
    )  # fmt: skip
    data_dir: Path = Path(".data")
    embedded_redis_port: int = Field(6390, ge=1, le=65535)
    embedded_postgres_port: int = Field(5440, ge=1, le=65535)

    # Queue and workers.
    queue_name: str = Field(
        "storymimi", min_length=1, pattern=r"^[^{}]+$", description="no braces: they make hash tags"
    )
    queues: str | None = Field(
        None, description="the queues a worker serves, with weights: storymimi:3,media:1 (unset: QUEUE_NAME alone); "
        "free job slots go to the queues in proportion to their weights, and a queue with no due jobs leaves its "
        "share to the others",
    )  # fmt: skip
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=64, description="default: CPU count")
    worker_concurrency: int = Field(10, ge=1, le=10_000)
    job_timeout_s: float = Field(3600, gt=0)
    job_soft_timeout_s: float = Field(3300, gt=0)
    job_max_tries: int = Field(3, ge=1)
    max_jobs_per_worker: int = Field(200, ge=0, description="0 disables recycling by job count")
    max_memory_per_worker_mb: int = Field(512, ge=0, description="0 disables recycling by memory")
    lease_ttl_s: float = Field(
        8, gt=0.2, description="a lost host's jobs run again after this (and a poll); renewed every third of it"
    )
    poll_interval_s: float = Field(
        1.0, gt=0, description="fallback poll of an idle worker; enqueues wake it at once, deferred jobs on time"
    )
    worker_hang_s: float | None = Field(
        None, gt=0, description="kill a worker whose event loop is blocked this long; default half LEASE_TTL_S"
    )
    host_id: str = Field(
        default_factory=socket.gethostname, pattern=r"^[^:\s]+$",
        description="this host's name in worker ids (no colons); processes sharing one must share a pid namespace",
    )  # fmt: skip
    loop_blocked_log_s: float = Field(
        1.0, gt=0, description="log the stack of an event loop blocked this long (once per block)"
    )
    abort_poll_s: float = Field(0.5, gt=0, description="how soon a cancel request reaches a running job")
    shutdown_grace_s: float = Field(30, ge=0)
    sweep_interval_s: float = Field(
        10, gt=0, description="how often one worker looks for stuck status rows: a job lost from Redis (a failover "
        "loses the last writes) runs again within SWEEP_STALE_AFTER_S + 1.2 x this of its row's last move",
    )  # fmt: skip
    sweep_stale_after_s: float = Field(30, ge=0, description="a row unmoved this long is checked against Redis")
    keep_result_s: float = Field(3600, ge=0)
    result_retention_s: float = Field(
        30 * 86_400, ge=0, description="how long ended jobs' rows (results, attempts) stay in Postgres; 0: for ever"
    )
    startup_retry_s: float = Field(60, ge=0, description="how long to retry Redis/Postgres at start-up")
    outage_retry_s: float = Field(60, ge=0, description="how long the runner's own writes ride out an outage")

    db_pool_size: int = Field(20, ge=2, le=200, description="Postgres connections per process")
    database_pooler: Literal["none", "pgbouncer"] = Field(
        "none", description="pgbouncer: DATABASE_URL is a pooler in transaction mode (PgBouncer or alike), which "
        "lends a server connection per transaction: asyncpg's prepared-statement cache off",
    )  # fmt: skip

    # API.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    fork_children: bool = Field(
        True, description="fork the workers and the API from a pre-imported zygote (less memory, a worker starts in "
        "~0.1 s); false: exec each one afresh, for job modules that are not safe to fork (threads started at import)",
    )  # fmt: skip
    metrics_port: int | None = Field(None, ge=1, le=65535, description="supervisor's own /metrics, for `make worker`")

    # The operators' dashboard (runner.dashboard): HTTP Basic, refused (401) until a password is set.
    ops_username: str = Field("admin", min_length=1)
    ops_password: SecretStr | None = Field(None, description="the dashboard's Basic password; unset: no access")
    ops_allow_no_auth: bool = Field(False, description="no password needed: for local use only")
    ops_read_only: bool = Field(False, description="hide the dashboard's actions and refuse its POSTs")

    # Logging.
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    otlp_endpoint: str | None = Field(
        None, pattern=r"^https?://", description="OTLP/HTTP base URL: traces on (runner.tracing); default: "
        "OTEL_EXPORTER_OTLP_ENDPOINT; unset: tracing off",
    )  # fmt: skip

    # The process's one httpx client (borrowed by jobs for their HTTP calls).
    http_connect_timeout_s: float = Field(5, gt=0)
    http_read_timeout_s: float = Field(120, gt=0)
    slot_prefix: str = Field("runner:slots", min_length=1, description="Redis key prefix of the shared slot pools")

    # Producers of other systems, unchanged (runner.intake): each intake on is one more supervised process.
    celery_intake: bool = Field(False, description="run Celery tasks sent to QUEUE_NAME (its list and priority lists)")
    celery_result_expires_s: int = Field(86_400, ge=1, description="Celery's result_expires: how long .get() can read")
    arq_intake: bool = Field(False, description="run arq jobs enqueued on ARQ_QUEUE_NAME")
    arq_queue_name: str = Field(
        "arq:queue", min_length=1, description="the arq producers' `_queue_name` (arq's default); never Celery's queue"
    )
    intake_poll_s: float = Field(0.02, gt=0, description="an intake's poll when Redis cannot notify it")

    @field_validator("redis_sentinels", "redis_cluster_nodes")
    @classmethod
    def _addresses(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None  # REDIS_SENTINELS= (empty) is unset
        server_addresses(value, setting=(info.field_name or "").upper())  # raises, naming the bad entry
        return value

    @field_validator("queues")
    @classmethod
    def _queue_weights(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # QUEUES= (empty) is unset
        queue_weights(value)  # raises, naming the bad entry
        return value

    @property
    def worker_queues(self) -> list[tuple[str, int]]:
        """The queues a worker serves and their weights: QUEUES, else QUEUE_NAME alone."""
        return queue_weights(self.queues) if self.queues else [(self.queue_name, 1)]

    @property
    def queue_names(self) -> list[str]:
        """QUEUE_NAME (where jobs without a queue of their own and the intakes enqueue), then the other
        queues of QUEUES: the ones /ready, /metrics, `python -m runner status` and `doctor` look at."""
        return [self.queue_name, *(name for name, _ in self.worker_queues if name != self.queue_name)]

    @property
    def redis_configured(self) -> bool:
        """Whether a Redis is given (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES); if not, an embedded
        one is started."""
        return bool(self.redis_url or self.redis_sentinels or self.redis_cluster_nodes)

    @model_validator(mode="after")
    def _limits_agree(self) -> Settings:
        if self.redis_sentinels and self.redis_cluster_nodes:
            raise ValueError(
                "REDIS_SENTINELS and REDIS_CLUSTER_NODES are both set: a Redis is either watched by sentinels or a "
                "cluster; unset the one that does not describe yours"
            )
        if self.redis_cluster_nodes and (self.celery_intake or self.arq_intake):
            raise ValueError(
                "CELERY_INTAKE and ARQ_INTAKE need a single Redis or Sentinel: Celery's and arq's keys are not "
                "under one hash tag, so a cluster cannot serve them; move the old producers over on one Redis first"
            )
        if self.redis_cluster_nodes and len(self.worker_queues) > 1:
            raise ValueError(
                f"QUEUES names {len(self.worker_queues)} queues, but with REDIS_CLUSTER_NODES a worker serves one: "
                "each queue is its own cluster slot, and an idle worker's one blocking read cannot span slots; run a "
                "fleet per queue (QUEUE_NAME=<queue>, QUEUES unset) instead"
            )
        if self.job_soft_timeout_s > self.job_timeout_s:
            raise ValueError(
                f"JOB_SOFT_TIMEOUT_S ({self.job_soft_timeout_s}) must not exceed "
                f"JOB_TIMEOUT_S ({self.job_timeout_s}): the soft limit warns before the hard one stops the job"
            )
        if self.worker_hang_s is not None and self.worker_hang_s >= self.lease_ttl_s * 2 / 3:
            raise ValueError(
                f"WORKER_HANG_S ({self.worker_hang_s}) must be below two thirds of LEASE_TTL_S "
                f"({self.lease_ttl_s}; leases are renewed every third of it): a worker blocked past its leases lets "
                "another worker start its jobs while it may still finish them"
            )
        return self

    @property
    def hang_after_s(self) -> float:
        """How long a worker's event loop may be blocked before its supervisor replaces it."""
        # Half the lease: a loop blocked just before a renewal (every third of the lease) is killed, and its
        # leases freed, a sixth of the lease before they would lapse.
        return self.worker_hang_s if self.worker_hang_s is not None else self.lease_ttl_s / 2
