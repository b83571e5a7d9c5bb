"""Text of many floats at once: the shortest decimal that reads back as the same float32.

``str(np.float32(x))`` per value costs about 0.4 us, so 10M run-file scores cost seconds; here
the digits are integer arithmetic over whole arrays. The rare values that a positional decimal
of at most 9 significant digits cannot write (zero, non-finite, below 1e-4 or from 1e9 on) take
numpy's own text, like Python's ``repr`` would.
"""

from __future__ import annotations

import numpy as np

MAX_DIGITS = 9  # enough for every float32 to read back exactly
_LOWEST_EXP, _HIGHEST_EXP = -4, MAX_DIGITS - 1  # positional for 1e-4 <= |x| < 1e9, as repr
_WIDTH = 1 + (-_LOWEST_EXP) + 1 + MAX_DIGITS  # sign, leading zeros, point, digits


_POW10 = 10.0 ** np.arange(-30, 31)  # a table: ``10.0 ** array`` calls pow() per element


def _pow10(exponent: np.ndarray) -> np.ndarray:
    return _POW10[exponent + 30]


def _layout(exp: int, digits: int) -> np.ndarray:
    """Which of ``chars``' columns each output column after the sign takes."""
    zero, point, nothing = MAX_DIGITS, MAX_DIGITS + 1, MAX_DIGITS + 2
    if exp >= 0:
        columns = list(range(min(exp + 1, digits))) + [zero] * max(0, exp + 1 - digits)
        if digits > exp + 1:
            columns += [point, *range(exp + 1, digits)]
    else:
        columns = [zero, point] + [zero] * (-exp - 1) + list(range(digits))
    return np.array(columns + [nothing] * (_WIDTH - 1 - len(columns)), dtype=np.intp)


def float32_text(values: np.ndarray) -> np.ndarray:
    """``(N,)`` floats as an ``(N, W)`` uint8 matrix of ASCII, where a 0 byte is no character.

    Each row is the shortest positional decimal (at most 9 significant digits, trailing zeros
    dropped) that parses back to the same float32, e.g. ``0.5``, ``-0.4999999``, ``12``.
    """
    with np.errstate(all="ignore"):  # zero, inf and nan rows compute junk, then take numpy's text
        return _text(np.asarray(values, dtype=np.float32).astype(np.float64))


def _text(x: np.ndarray) -> np.ndarray:
    magnitude = np.abs(x)
    exp = np.floor(np.log10(magnitude))
    simple = np.isfinite(exp) & (exp >= _LOWEST_EXP) & (exp <= _HIGHEST_EXP)
    exp = np.where(simple, exp, 0).astype(np.int64)
    # log10 can be one off next to a power of ten: fix it from the 9-digit mantissa
    top = np.rint(magnitude * _pow10(MAX_DIGITS - 1 - exp))
    exp += (top >= 10**MAX_DIGITS).astype(np.int64) - (top < 10 ** (MAX_DIGITS - 1))
    simple &= (exp >= _LOWEST_EXP) & (exp <= _HIGHEST_EXP)
    exp = np.where(simple, exp, 0)

    # the fewest digits that read back: if n digits do, n + 1 do too, so bisect on [1, 9]
    target = magnitude.astype(np.float32)
    low = np.ones(len(x), dtype=np.int64)
    high = np.full(len(x), MAX_DIGITS, dtype=np.int64)
    for _ in range(4):  # ceil(log2(9))
        n = (low + high) // 2
        m = np.rint(magnitude * _pow10(n - 1 - exp))
        reads_back = (m * _pow10(exp - n + 1)).astype(np.float32) == target
        high = np.where(reads_back, n, high)
        low = np.where(reads_back, low, n + 1)
    digits = high
    mantissa = np.rint(magnitude * _pow10(digits - 1 - exp)).astype(np.int64)
    # a mantissa that rounded up to 10^n (9.9999995 -> 10) is written with one more digit
    carried = simple & (mantissa >= 10**digits)
    mantissa[carried] //= 10
    exp[carried] += 1
    simple &= (digits > 0) & (exp <= _HIGHEST_EXP)

    aligned = (mantissa * 10 ** (MAX_DIGITS - digits)).astype(np.uint32)  # < 10^9
    # columns: the 9 digits (left-aligned) as ASCII, then "0", ".", and 0 (nothing)
    chars = np.empty((len(x), MAX_DIGITS + 3), dtype=np.uint8)
    for column in range(MAX_DIGITS - 1, -1, -1):
        aligned, chars[:, column] = np.divmod(aligned, np.uint32(10))
    chars[:, :MAX_DIGITS] += ord("0")
    chars[:, MAX_DIGITS:] = [ord("0"), ord("."), 0]
    out = np.zeros((len(x), _WIDTH), dtype=np.uint8)
    out[:, 0] = np.where(x < 0, ord("-"), 0)
    for e in range(_LOWEST_EXP, _HIGHEST_EXP + 1):
        rows = np.flatnonzero(simple & (exp == e))
        for n in range(1, MAX_DIGITS + 1):  # the layout depends on the exponent and length
            chosen = rows[digits[rows] == n]
            if chosen.size:
                out[chosen, 1:] = chars[chosen][:, _layout(e, n)]
    rest = np.flatnonzero(~simple)
    if rest.size:
        text = np.char.encode(x[rest].astype(np.float32).astype(str), "ascii")
        out[rest] = 0
        raw = text.view(np.uint8).reshape(len(rest), -1)
        width = min(raw.shape[1], _WIDTH)
        if raw.shape[1] > _WIDTH:
            out = np.pad(out, ((0, 0), (0, raw.shape[1] - _WIDTH)))
            width = raw.shape[1]
        out[rest, :width] = raw
    return out
