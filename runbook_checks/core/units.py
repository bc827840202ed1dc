"""Sizes, rates and durations as the kit's parameters take them: bytes or units or a share
of the disk (buildkitd.toml), bits per second (kbit/mbit/gbit), seconds or w/d/h/m/s, and
Prometheus durations."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ByteSize

from .errors import ParameterError, Refusal

_DURATION = re.compile(r"^\s*(?:(\d+)w)?\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*$")


def parse_size(value: Any) -> int | str:
    """Bytes as an int, or a percentage of the disk as "N%" (BuildKit accepts both).

    Accepts 512000000, "512MB", "10GiB", "1.5 GB", "10%"."""
    fix = 'use bytes (512000000), a unit ("512MB", "10GiB") or a percentage of the disk ("10%")'
    if isinstance(value, bool):
        raise Refusal(f"{value!r} is not a size", fix)
    if isinstance(value, str) and value.strip().endswith("%"):
        number = value.strip()[:-1].strip()
        if number.isdigit() and 0 < int(number) <= 100:
            return f"{int(number)}%"
        raise Refusal(f"{value!r} is not a percentage between 1% and 100%", 'write it like "10%"')
    try:
        size = int(ByteSize._validate(value, None)) if not isinstance(value, int) else value
    except (ValueError, TypeError):
        raise Refusal(f"{value!r} is not a size", fix) from None
    if size < 0:
        raise Refusal(f"{value!r} is negative", "give zero or more bytes")
    return size


_RATE = re.compile(r"^\s*(\d+)\s*(kbit|mbit|gbit)\s*$")
RATE_UNITS = {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9}


def parse_rate(value: Any) -> int:
    """Bits per second; 0 for none. Accepts "", "512kbit", "100mbit", "1gbit" (as tc writes them)."""
    if value in ("", None, 0):
        return 0
    match = _RATE.match(str(value).lower())
    if not match or int(match.group(1)) == 0:
        raise Refusal(f"{value!r} is not a rate", 'write it like "100mbit" (kbit, mbit, gbit: bits per second), or'
                      " leave it empty for none")
    return int(match.group(1)) * RATE_UNITS[match.group(2)]


def parse_duration(value: Any) -> int:
    """Seconds. Accepts 172800, "48h", "2d", "1w 2d", "90m", "30s"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _DURATION.match(str(value)) if isinstance(value, str) and value.strip() else None
    if not match or not any(match.groups()):
        raise Refusal(f"{value!r} is not a duration", 'write seconds (172800) or units w/d/h/m/s ("48h", "7d")')
    w, d, h, m, s = (int(g or 0) for g in match.groups())
    return (((w * 7 + d) * 24 + h) * 60 + m) * 60 + s


def prom_minutes(duration: str) -> float:
    """A Prometheus duration ("90s", "5m", "2h", "1d") in minutes."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|y)", duration.strip())
    if not match:
        raise ParameterError(f"{duration!r} is not a Prometheus duration", 'write it like "30s", "5m" or "2h"')
    factor = {"ms": 1 / 60000, "s": 1 / 60, "m": 1, "h": 60, "d": 1440, "w": 10080, "y": 525600}[match.group(2)]
    return int(match.group(1)) * factor


def prom_seconds(duration: str) -> int:
    """A Prometheus duration in whole seconds."""
    return round(prom_minutes(duration) * 60)


def human_bytes(n: float) -> str:
    """1536 -> "1.5 KiB": for messages and tables."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def p95(values) -> float:
    """The 95th percentile of `values` (the nearest rank at or below it); 0.0 for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0
