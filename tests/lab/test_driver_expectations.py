"""What the driver lab claims for drivers that retry, expire idle connections or set their
own user timeout: the judgements behind the table in docs/LAB.md, without a lab."""

from __future__ import annotations

from peerwatch.lab.agents.drivers import client_class
from peerwatch.lab.drivers.faults import BY_NAME, expectation, settings_for

FULL = settings_for("full")
#: py-amqp's own options after it connects (read back by the lab): 60+10x9, 1,000 ms.
PY_AMQP = {
    "SO_KEEPALIVE": 1,
    "TCP_KEEPIDLE": 60,
    "TCP_KEEPINTVL": 10,
    "TCP_KEEPCNT": 9,
    "TCP_USER_TIMEOUT": 1000,
}


def test_a_driver_that_retries_on_a_new_connection_gets_one_budget_per_attempt() -> None:
    aiohttp = client_class("aiohttp", "run")
    assert aiohttp is not None and aiohttp.attempts == 2
    once = expectation(BY_NAME["power-off-inflight"], "run", FULL)
    twice = expectation(BY_NAME["power-off-inflight"], "run", FULL, attempts=aiohttp.attempts)
    assert (once.outcome, once.within) == ("error", FULL.claimed)
    assert (twice.outcome, twice.within) == ("error", 2 * FULL.claimed)


def test_a_pool_that_drops_idle_connections_before_the_nat_forgets_them_gets_a_reply() -> None:
    middlebox = BY_NAME["middlebox"]
    httpx = client_class("httpx", "defaults")
    assert httpx is not None and httpx.idle_expiry is not None
    assert httpx.idle_expiry < FULL.middlebox_timeout
    kept = expectation(middlebox, "defaults", FULL, {}, idle_expiry=httpx.idle_expiry)
    assert kept.outcome == "reply"
    later = expectation(middlebox, "defaults", FULL, {}, idle_expiry=FULL.middlebox_timeout + 9)
    assert later.outcome is None  # depends on how long it sat idle: measured, no claim
    assert expectation(middlebox, "defaults", FULL, {}).outcome == "never"


def test_a_drivers_own_user_timeout_ends_a_request_the_nat_swallowed() -> None:
    own = expectation(BY_NAME["middlebox"], "defaults", FULL, PY_AMQP)
    assert (own.outcome, own.within) == ("error", 2.0)


def test_guard_and_driver_options_are_not_applicable_where_they_cannot_be_measured() -> None:
    assert client_class("asyncpg", "driver") is None  # asyncpg has no such options
    assert client_class("httpx", "guard") is None  # its pool opens connections by itself
    assert client_class("aiohttp", "guard") is None
    assert client_class("kombu", "driver") is not None
    assert client_class("asyncpg", "pool-check") is None
