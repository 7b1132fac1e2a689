"""REDIS_SENTINELS and REDIS_CLUSTER_NODES: host:port lists read once, each error naming its variable and entry."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from runner.settings import Settings, server_addresses


def test_sentinels_are_read_as_host_port_pairs():
    """Spaces around entries are ignored and an IPv6 host is written in brackets."""
    assert server_addresses("10.0.0.1:26379, sentinel-b:26380 ,[::1]:26381") == [
        ("10.0.0.1", 26379),
        ("sentinel-b", 26380),
        ("::1", 26381),
    ]


@pytest.mark.parametrize("value", ["10.0.0.1", "10.0.0.1:", ":26379", "a:26379,b", "a:0", "a:65536", "a:port"])
def test_a_bad_sentinel_entry_is_named(value: str):
    """The error names the variable, the expected form and the entry at fault."""
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, redis_sentinels=value)  # type: ignore[call-arg]
    message = str(caught.value)
    assert "REDIS_SENTINELS must be a comma-separated list of host:port" in message
    assert repr(value.rsplit(",", 1)[-1]) in message


def test_sentinels_stand_for_redis_url():
    """With REDIS_SENTINELS no REDIS_URL is needed (no embedded Redis is started); empty means unset."""
    with_sentinels = Settings(_env_file=None, redis_sentinels="127.0.0.1:26379")  # type: ignore[call-arg]
    assert with_sentinels.redis_configured and with_sentinels.redis_sentinel_master == "mymaster"
    empty = Settings(_env_file=None, redis_sentinels="")  # type: ignore[call-arg]
    assert empty.redis_sentinels is None and not empty.redis_configured


def test_cluster_nodes_stand_for_redis_url_and_a_bad_entry_is_named():
    """REDIS_CLUSTER_NODES selects a cluster (no REDIS_URL needed); its bad entry is named under its own name."""
    cluster = Settings(_env_file=None, redis_cluster_nodes="10.0.0.1:6379,10.0.0.2:6379")  # type: ignore[call-arg]
    assert cluster.redis_configured and server_addresses(cluster.redis_cluster_nodes or "")[1] == ("10.0.0.2", 6379)
    with pytest.raises(ValidationError, match="REDIS_CLUSTER_NODES must be a comma-separated list of host:port"):
        Settings(_env_file=None, redis_cluster_nodes="10.0.0.1:6379,node-b")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"redis_sentinels": "10.0.0.9:26379"}, "REDIS_SENTINELS and REDIS_CLUSTER_NODES are both set"),
        ({"celery_intake": True}, "CELERY_INTAKE and ARQ_INTAKE need a single Redis or Sentinel"),
        ({"arq_intake": True}, "CELERY_INTAKE and ARQ_INTAKE need a single Redis or Sentinel"),
    ],
)
def test_what_a_cluster_cannot_be_combined_with_is_refused(extra: dict[str, object], says: str):
    with pytest.raises(ValidationError, match=says):
        Settings(_env_file=None, redis_cluster_nodes="10.0.0.1:6379", **extra)  # type: ignore[arg-type]
