"""REDIS_SENTINELS is read as host:port pairs, a bad entry is named, and Sentinel counts as a Redis given."""

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
