"""What zero-code protection applies: one budget, and which connections it touches.

Kept free of dataclasses and typing imports on purpose: this module is loaded
by the start-up bootstrap of every protected interpreter, and those two
imports alone cost milliseconds (``dataclasses`` pulls in ``inspect``).
"""

from __future__ import annotations

import math

from peerwatch.errors import ConfigError

#: The environment variable that carries the settings (``peerwatch run`` sets it).
ENV_VAR = "PEERWATCH_PROTECT"

_BOOLEAN = {"1": True, "true": True, "yes": True, "on": True,
            "0": False, "false": False, "no": False, "off": False}  # fmt: skip
_LOG_LEVELS = ("", "info", "debug")


class ProtectSettings:
    """Immutable settings of zero-code protection (validated on construction).

    ``timeout``: seconds within which a dead peer becomes an error, idle or busy
    (the ``guard`` budget). ``idle_limit``: a middlebox's idle timeout; the first
    keepalive probe comes before it. ``include_loopback``: protect connections to
    127.0.0.0/8 and ::1 too (left alone by default: a loopback peer cannot vanish
    without its kernel telling us). ``accepted``: protect accepted connections
    too, not only outgoing ones. ``log``: ``"info"``/``"debug"`` makes the
    bootstrap print the per-connection lines on stderr ("" leaves logging to the
    program). ``defend``: keep the budget's keepalive and user timeout on a
    protected socket when the program (a driver) sets them again after
    connecting (``peerwatch.protection.defence``); False lets the program's
    values through, as before.
    """

    __slots__ = (
        "accepted", "defend", "idle_limit", "include_loopback", "log", "probes", "timeout",
    )  # fmt: skip

    timeout: float
    idle_limit: float | None
    include_loopback: bool
    accepted: bool
    probes: int
    log: str
    defend: bool

    def __init__(
        self,
        timeout: float = 10.0,
        *,
        idle_limit: float | None = None,
        include_loopback: bool = False,
        accepted: bool = False,
        probes: int = 3,
        log: str = "",
        defend: bool = True,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise ConfigError(f"timeout must be a number of seconds, got {timeout!r}")
        if not math.isfinite(timeout) or timeout < 1:
            raise ConfigError(f"timeout must be at least 1 second, got {timeout!r}")
        if idle_limit is not None and (
            isinstance(idle_limit, bool)
            or not isinstance(idle_limit, (int, float))
            or not math.isfinite(idle_limit)
            or idle_limit < 2
        ):
            raise ConfigError(f"idle_limit must be at least 2 seconds, got {idle_limit!r}")
        if isinstance(probes, bool) or not isinstance(probes, int) or not 1 <= probes <= 20:
            raise ConfigError(f"probes must be a whole number from 1 to 20, got {probes!r}")
        if log not in _LOG_LEVELS:
            raise ConfigError(f"log must be one of info, debug (or empty), got {log!r}")
        set_ = object.__setattr__
        set_(self, "timeout", float(timeout))
        set_(self, "idle_limit", None if idle_limit is None else float(idle_limit))
        set_(self, "include_loopback", bool(include_loopback))
        set_(self, "accepted", bool(accepted))
        set_(self, "probes", probes)
        set_(self, "log", log)
        set_(self, "defend", bool(defend))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ProtectSettings is immutable; cannot set {name}")

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProtectSettings) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"ProtectSettings({self.to_env()})"

    def to_env(self) -> str:
        """The ``PEERWATCH_PROTECT`` value that ``from_env`` turns back into these settings."""
        parts = [f"timeout={self.timeout:g}"]
        if self.idle_limit is not None:
            parts.append(f"idle_limit={self.idle_limit:g}")
        if self.include_loopback:
            parts.append("include_loopback=1")
        if self.accepted:
            parts.append("accepted=1")
        if self.probes != 3:
            parts.append(f"probes={self.probes}")
        if self.log:
            parts.append(f"log={self.log}")
        if not self.defend:
            parts.append("defend=0")
        return ",".join(parts)

    @classmethod
    def from_env(cls, text: str) -> ProtectSettings:
        """Parse ``timeout=5,idle_limit=300,include_loopback=1,accepted=1,probes=3,log=info``.

        (and ``defend=0``).

        Every key is optional; an empty string means the defaults. Raises
        ``ConfigError`` with a one-line message naming the bad item.
        """
        values: dict[str, str] = {}
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep:
                raise ConfigError(f"{ENV_VAR}: {item!r} is not key=value")
            if key not in cls.__slots__:
                known = ", ".join(sorted(cls.__slots__))
                raise ConfigError(f"{ENV_VAR}: unknown key {key!r} (known: {known})")
            if key in values:
                raise ConfigError(f"{ENV_VAR}: {key!r} given twice")
            values[key] = value.strip()
        try:
            timeout = _number(values, "timeout")
            probes = _number(values, "probes")
            return cls(
                timeout=10.0 if timeout is None else timeout,
                idle_limit=_number(values, "idle_limit"),
                include_loopback=_flag(values, "include_loopback"),
                accepted=_flag(values, "accepted"),
                probes=3 if probes is None else int(probes),
                log=values.get("log", "").lower(),
                defend=_flag(values, "defend", default="1"),
            )
        except ConfigError as exc:
            raise ConfigError(f"{ENV_VAR}: {exc}") from None


def _number(values: dict[str, str], key: str) -> float | None:
    text = values.get(key)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {text!r}") from None
    if key == "probes" and (not math.isfinite(number) or number != int(number)):
        raise ConfigError(f"probes must be a whole number, got {text!r}")
    return number


def _flag(values: dict[str, str], key: str, default: str = "0") -> bool:
    text = values.get(key, default).lower()
    if text not in _BOOLEAN:
        raise ConfigError(f"{key} must be 1 or 0, got {text!r}")
    return _BOOLEAN[text]
