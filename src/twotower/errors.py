"""Config validation: one error type whose message names the key, the value and what is allowed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work, raised when the part is built (before training).

    ``key`` is relative to the part (``margin``); the builder (:mod:`twotower.build`) prefixes the
    config path (``loss.margin``) with :meth:`under`.
    """

    def __init__(self, key: str, value: Any, expected: str):
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key}={value!r}: {expected}")

    def under(self, prefix: str) -> ConfigError:
        return ConfigError(
            f"{prefix}.{self.key}" if prefix else self.key, self.value, self.expected
        )


@contextmanager
def under(prefix: str) -> Iterator[None]:
    """Re-raise a part's :class:`ConfigError` with its config path (``loss.margin``)."""
    try:
        yield
    except ConfigError as e:
        raise e.under(prefix) from None


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


class DataError(ValueError):
    """Bad input data, raised while reading (before training): names file, line and field.

    ``line`` is 1-based (the header is line 1 of a table); ``None`` for file-level problems.
    """

    def __init__(self, path: Any, line: int | None, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{problem}")


class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient or vector: training stops at once (exit code 3)."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Config and data mistakes end a command with one line and exit code 2, a diverged run
    with one line and exit code 3; no traceback."""
    try:
        yield
    except ConfigError as e:
        print(f"twotower: config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except DataError as e:
        print(f"twotower: data error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except TrainingDiverged as e:
        print(f"twotower: training diverged: {e}", file=sys.stderr)
        raise SystemExit(3) from None
