"""The lease numbers agree: a lost host's jobs run again within 10 s, and a worker whose loop is blocked is
killed (its leases freed) before they lapse. HOST_ID names the host in worker ids."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from runner.fleet.control import BEAT_S  # how often a child reports its loop to the supervisor
from runner.settings import Settings

RENEWAL_SHARE = 1 / 3  # runner.worker.worker renews every third of the lease


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LEASE_TTL_S", "WORKER_HANG_S", "HOST_ID", "POLL_INTERVAL_S"):
        monkeypatch.delenv(var, raising=False)


def test_default_lease_bounds_host_loss_to_ten_seconds():
    """The lease plus an idle worker's poll (when the lapse is seen) stays within 10 s."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.lease_ttl_s + settings.poll_interval_s <= 10


@pytest.mark.parametrize("lease_ttl_s", [8, 9, 30])
def test_default_hang_kill_comes_before_the_leases_lapse(lease_ttl_s: float):
    """A loop blocked just after a renewal is reported, killed and released before the lease ends."""
    settings = Settings(_env_file=None, lease_ttl_s=lease_ttl_s)  # type: ignore[call-arg]
    worst = lease_ttl_s * RENEWAL_SHARE + settings.hang_after_s + BEAT_S
    assert worst < lease_ttl_s


def test_a_hang_limit_that_outlasts_the_leases_is_refused_naming_both():
    with pytest.raises(ValidationError, match=r"WORKER_HANG_S \(6\.0\) must be below two thirds of LEASE_TTL_S"):
        Settings(_env_file=None, lease_ttl_s=9, worker_hang_s=6)  # type: ignore[call-arg]
    assert Settings(_env_file=None, lease_ttl_s=9, worker_hang_s=5.9).hang_after_s == 5.9  # type: ignore[call-arg]


def test_host_id_defaults_to_the_hostname_and_refuses_colons():
    assert Settings(_env_file=None).host_id == socket.gethostname()  # type: ignore[call-arg]
    assert Settings(_env_file=None, host_id="web-7").host_id == "web-7"  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="host_id"):
        Settings(_env_file=None, host_id="web:7")  # type: ignore[call-arg]
