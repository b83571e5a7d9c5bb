"""Config validation: one error type whose message names the key, the value and what is allowed."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work, raised when the part is built (before training).

    ``key`` is relative to the part (``margin``); the builder in ``train.py`` prefixes the
    config path (``loss.margin``) with :meth:`under`.
    """

    def __init__(self, key: str, value: Any, expected: str):
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key}={value!r}: {expected}")

    def under(self, prefix: str) -> ConfigError:
        return ConfigError(
            f"{prefix}.{self.key}" if prefix else self.key, self.value, self.expected
        )


def check(ok: bool, key: str, value: Any, expected: str) -> None:
    """Raise :class:`ConfigError` unless ``ok``."""
    if not ok:
        raise ConfigError(key, value, expected)


def check_choice(key: str, value: Any, choices: tuple | list) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    check(value in choices, key, value, f"must be one of {', '.join(map(str, choices))}")


def check_positive(key: str, value: Any, *, allow_zero: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a number > 0 (or >= 0)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    check(ok, key, value, "must be >= 0" if allow_zero else "must be > 0")
