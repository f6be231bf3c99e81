"""What every workload shares: the operation record and the checks of `-p key=value` parameters.

Apart from `workloads.py` (the endorse/order/validate workloads) so that the workloads of the
other flows (`flows.py`: notaries, private payloads, UTXO DvPs) use the same checks and the
registry in `workloads.py` can name them all without an import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Op:
    """One operation: a contract invocation on a channel (or, for other drivers, its analogue:
    the driver of each flow documents what `channel`, `contract`, `function` and `args` mean)."""

    channel: str
    contract: str
    function: str
    args: tuple[str, ...]


class ParamError(ValueError):
    """A workload parameter is unknown or malformed."""


def take(params: Mapping[str, str], allowed: set[str]) -> None:
    """Refuse parameters the workload does not know (a typo must not run the default)."""
    unknown = set(params) - allowed
    if unknown:
        raise ParamError(f"unknown parameter(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def int_param(params: Mapping[str, str], key: str, default: int, low: int = 1) -> int:
    """An integer parameter >= low."""
    raw = params.get(key, str(default))
    try:
        value = int(raw)
    except ValueError as exc:
        raise ParamError(f"{key} must be an integer, got {raw!r}") from exc
    if value < low:
        raise ParamError(f"{key} must be >= {low}, got {value}")
    return value


def float_param(
    params: Mapping[str, str], key: str, default: float, low: float, high: float
) -> float:
    """A number parameter in [low, high]."""
    raw = params.get(key, str(default))
    try:
        value = float(raw)
    except ValueError as exc:
        raise ParamError(f"{key} must be a number, got {raw!r}") from exc
    if not low <= value <= high:
        raise ParamError(f"{key} must be in [{low}, {high}], got {value}")
    return value


def parse_params(pairs: list[str]) -> dict[str, str]:
    """`["a=1", "b=x"]` -> `{"a": "1", "b": "x"}`; raises ParamError."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ParamError(f"parameter must be key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out
