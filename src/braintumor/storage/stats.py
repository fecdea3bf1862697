"""Statistics over stored scans, computed the same way for every backend: the admin dashboard's counts and one
user's Dashboard (outcomes, probability histogram, scans per day in the caller's time zone).

Why apart from :mod:`.base`: the backends only gather the facts (:class:`ScanFacts`, per-day counts); what is
made of them lives here once, so SQLite and MongoDB cannot drift.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stats:
    """What the admin dashboard shows. ``per_day`` covers the last ``days`` days (UTC), oldest first."""

    users: int
    admins: int
    scans: int
    scans_per_user: list[tuple[str, int]]
    outcomes: dict[str, int]
    per_day: list[tuple[str, int]]


#: Bins of the probability histogram in :class:`ScanStats` (5 % wide).
HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class ScanFacts:
    """The indexed facts of one scan that statistics need (no result JSON, no files)."""

    outcome: str
    p_tumor: float
    model: str
    threshold: float
    created_at: dt.datetime


@dataclass(frozen=True)
class ScanStats:
    """One user's scans at a glance (the Dashboard): counts per outcome, mean p(tumor), scans per model, a
    probability histogram (``HISTOGRAM_BINS`` bins per outcome), scans per day per outcome (days in the caller's
    UTC offset) and the newest scan's threshold."""

    scans: int
    outcomes: dict[str, int]
    mean_p_tumor: float | None
    models: list[tuple[str, int]]
    histogram: dict[str, list[int]]
    per_day: list[tuple[str, str, int]]
    threshold: float | None


def summarise_scans(facts: Sequence[ScanFacts], utc_offset_minutes: int = 0) -> ScanStats:
    """:class:`ScanStats` of ``facts`` (newest first), the same for every backend.

    >>> t = dt.datetime(2026, 1, 2, 23, 30, tzinfo=dt.UTC)
    >>> s = summarise_scans([ScanFacts("tumor", 0.97, "m v1", 0.4, t), ScanFacts("refer", 0.42, "m v1", 0.4, t)],
    ...                     utc_offset_minutes=60)
    >>> s.outcomes, s.per_day, s.histogram["refer"][8]
    ({'tumor': 1, 'refer': 1}, [('2026-01-03', 'refer', 1), ('2026-01-03', 'tumor', 1)], 1)
    """
    outcomes: dict[str, int] = {}
    models: dict[str, int] = {}
    histogram: dict[str, list[int]] = {}
    days: dict[tuple[str, str], int] = {}
    shift = dt.timedelta(minutes=utc_offset_minutes)
    for f in facts:
        outcomes[f.outcome] = outcomes.get(f.outcome, 0) + 1
        models[f.model] = models.get(f.model, 0) + 1
        bins = histogram.setdefault(f.outcome, [0] * HISTOGRAM_BINS)
        bins[min(HISTOGRAM_BINS - 1, max(0, int(f.p_tumor * HISTOGRAM_BINS)))] += 1
        day = ((f.created_at.astimezone(dt.UTC) + shift).date().isoformat(), f.outcome)
        days[day] = days.get(day, 0) + 1
    return ScanStats(
        scans=len(facts),
        outcomes=outcomes,
        mean_p_tumor=sum(f.p_tumor for f in facts) / len(facts) if facts else None,
        models=sorted(models.items(), key=lambda kv: (-kv[1], kv[0])),
        histogram=histogram,
        per_day=[(d, o, n) for (d, o), n in sorted(days.items())],
        threshold=facts[0].threshold if facts else None,
    )


def per_day_series(counts: Mapping[str, int], days: int, today: dt.date | None = None) -> list[tuple[str, int]]:
    """Fill a ``{"YYYY-MM-DD": n}`` mapping into a dense, oldest-first series of the last ``days`` days."""
    end = today or dt.datetime.now(dt.UTC).date()
    out = []
    for back in range(days - 1, -1, -1):
        day = (end - dt.timedelta(days=back)).isoformat()
        out.append((day, int(counts.get(day, 0))))
    return out
