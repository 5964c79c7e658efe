"""Cohorts of simulated clients: who gets the load-balanced namespace and who gets one server's own name.

A cohort spec is ``NAME=WEIGHT[,NAME=WEIGHT…]`` where NAME is ``namespace`` or a server label (``mb1``) or a
server's full name; weights are non-negative numbers, not all zero. Users are dealt out by smooth weighted round
robin over their index (the n-th user of a process gets the n-th slot), so every prefix of the users — a ramp-up
that stops early, or each of several worker processes — holds the cohorts in proportion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from casprobe.errors import ConfigError

__all__ = ["Cohort", "CohortPlan", "parse_cohorts"]

NAMESPACE = "namespace"
_MAX_COHORTS = 64


@dataclass(frozen=True, slots=True)
class Cohort:
    """A cohort: its label (``namespace`` / ``mb1``), the host name its clients use, its weight."""

    label: str
    host: str
    weight: float


@dataclass(frozen=True, slots=True)
class CohortPlan:
    """The cohorts of a load run, and which one the n-th user belongs to."""

    cohorts: tuple[Cohort, ...]

    def assign(self, index: int) -> Cohort:
        """The cohort of user number ``index`` (0-based), by smooth weighted round robin."""
        total = sum(c.weight for c in self.cohorts)
        current = [0.0] * len(self.cohorts)
        chosen = 0
        for _ in range(index % _period(self.cohorts) + 1):
            for i, cohort in enumerate(self.cohorts):
                current[i] += cohort.weight
            chosen = max(range(len(self.cohorts)), key=lambda i: (current[i], -i))
            current[chosen] -= total
        return self.cohorts[chosen]

    def sizes(self, users: int) -> dict[str, int]:
        """How many of ``users`` users each cohort gets."""
        counts = {c.label: 0 for c in self.cohorts}
        for index in range(users):
            counts[self.assign(index).label] += 1
        return counts


def _period(cohorts: Sequence[Cohort]) -> int:
    """A cycle length after which the round robin repeats (exact for integer weights, bounded otherwise)."""
    weights = [c.weight for c in cohorts]
    if all(float(w).is_integer() for w in weights):
        return max(1, int(sum(weights)) // max(1, math.gcd(*(int(w) for w in weights if w))))
    return 10_000


def parse_cohorts(spec: str, *, namespace: str, servers: Sequence[str]) -> CohortPlan:
    """Read a cohort spec against the run's namespace and server names (``mb1.lab.test`` …)."""
    by_label = {name.split(".", 1)[0].lower(): name for name in servers}
    by_name = {name.lower(): name for name in servers}
    cohorts: list[Cohort] = []
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ConfigError("cohorts: empty spec (expected e.g. namespace=7,mb1=3)")
    if len(parts) > _MAX_COHORTS:
        raise ConfigError(f"cohorts: more than {_MAX_COHORTS} cohorts")
    for part in parts:
        name, sep, weight_text = part.partition("=")
        name = name.strip().lower()
        try:
            weight = float(weight_text) if sep else 1.0
        except ValueError:
            raise ConfigError(f"cohorts: {part!r}: the weight must be a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"cohorts: {part!r}: the weight must be a finite number >= 0")
        if name == NAMESPACE:
            label, host = NAMESPACE, namespace
        elif name in by_label:
            label, host = name, by_label[name]
        elif name in by_name:
            label, host = name.split(".", 1)[0], by_name[name]
        else:
            known = ", ".join([NAMESPACE, *by_label]) or NAMESPACE
            raise ConfigError(f"cohorts: unknown name {name!r} (known: {known})")
        if any(c.label == label for c in cohorts):
            raise ConfigError(f"cohorts: {label!r} given twice")
        cohorts.append(Cohort(label, host, weight))
    if not any(c.weight > 0 for c in cohorts):
        raise ConfigError("cohorts: every weight is 0")
    return CohortPlan(tuple(c for c in cohorts if c.weight > 0))
