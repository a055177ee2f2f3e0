"""Configuration is validated once, with errors that say what to change."""

from __future__ import annotations

import pytest

from peerwatch.core.config import Config
from peerwatch.errors import ConfigError
from peerwatch.kernel.knobs import knobs_for


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"interval": 2.0, "timeout": 1.0}, r"timeout \(1.0 s\) must be longer than interval"),
        ({"interval": 0}, "interval must be a positive number"),
        ({"timeout": float("nan")}, "timeout must be a positive number"),
        ({"policy": "magic"}, "policy must be 'fixed' or 'adaptive'"),
        ({"min_timeout": 0.5}, r"min_timeout \(0.5 s\) must lie in"),
        ({"max_frame": 10}, "max_frame must lie in"),
        ({"chunk_size": 1 << 20}, "chunk_size must lie in"),
        ({"send_queue": 0}, "send_queue must be at least 1"),
        ({"recv_buffer": 0}, "recv_buffer must be at least 1"),
        ({"phi_threshold": -1}, "phi_threshold must be positive"),
    ],
)
def test_inconsistent_settings_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config(**fields)  # type: ignore[arg-type]


def test_with_validates_too() -> None:
    with pytest.raises(ConfigError):
        Config().with_(timeout=0.1)


@pytest.mark.parametrize(("interval", "timeout"), [(0.2, 1.0), (1.0, 5.0), (5.0, 30.0)])
def test_kernel_backup_fires_after_the_heartbeat_verdict(interval: float, timeout: float) -> None:
    cfg = Config(interval=interval, timeout=timeout)
    knobs = knobs_for(cfg.kernel_bound)
    # heartbeats decide first; the kernel catches what they cannot (e.g. a stalled process)
    assert knobs.user_timeout_ms / 1000 >= timeout
    assert knobs.keepalive_bound >= timeout
    # and not far behind: keepalive counts whole seconds, at least idle 1 s + 3 probes of 1 s
    assert knobs.keepalive_bound <= max(cfg.kernel_bound, 1 + 3)
