"""Altair charts for the dashboard, the admin page and the study page: few marks, fixed outcome colours, labelled
axes.

Why Altair: it ships with Streamlit, renders crisp in the browser, and its tooltips give exact numbers
without cluttering the chart. Data go in as plain rows (no pandas needed).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import altair as alt

from braintumor.ui.components import OUTCOME_COLOURS, OUTCOME_NAMES

OUTCOME_ORDER = ["Tumor", "Refer", "No tumor"]
HEIGHT = 330
DAY_HEIGHT = 260
CURVE_HEIGHT = 340  # with the axis and the legend: a plot about 200 px high
NOT_ASSESSED = "Not assessed"
NOT_ASSESSED_COLOUR = "#9e9e9e"
#: Whole-number axes for counts (no "0.5 scans").
COUNT_AXIS = alt.Axis(tickMinStep=1, format="d")


def _outcome_colour() -> alt.Color:
    return alt.Color(
        "outcome:N",
        title="Outcome",
        scale=alt.Scale(domain=OUTCOME_ORDER, range=[OUTCOME_COLOURS[b] for b in OUTCOME_ORDER]),
        legend=alt.Legend(orient="bottom"),
    )


def outcome_mix(counts: dict[str, int]) -> alt.LayerChart:
    """Scans per outcome (tumor / refer / no tumor), as horizontal bars with their counts."""
    total = sum(counts.values()) or 1
    rows = [
        {"outcome": OUTCOME_NAMES.get(k, k), "scans": n, "share": n / total}
        for k, n in sorted(counts.items(), key=lambda kv: OUTCOME_ORDER.index(OUTCOME_NAMES.get(kv[0], "Tumor")))
    ]
    base = alt.Chart({"values": rows}).encode(
        y=alt.Y("outcome:N", sort=OUTCOME_ORDER, title=None),
        x=alt.X("scans:Q", title="Scans", axis=COUNT_AXIS),
        tooltip=[alt.Tooltip("outcome:N"), alt.Tooltip("scans:Q"), alt.Tooltip("share:Q", format=".0%")],
    )
    bars = base.mark_bar(cornerRadiusEnd=3).encode(color=_outcome_colour().legend(None))
    text = base.mark_text(align="left", dx=4).encode(text="scans:Q")
    return alt.LayerChart(layer=[bars, text], height=100 + 48 * len(rows))


def probability_histogram(histogram: dict[str, Sequence[int]], threshold: float | None) -> alt.LayerChart:
    """How the calibrated probabilities spread (the server's bins of 5 %), stacked by outcome, with the operating
    threshold the referral band was built around marked."""
    rows = []
    for outcome, counts in histogram.items():
        step = 1 / max(len(counts), 1)
        rows += [
            {"lo": k * step, "hi": (k + 1) * step, "outcome": OUTCOME_NAMES.get(outcome, outcome), "scans": n}
            for k, n in enumerate(counts)
            if n
        ]
    bars = (
        alt.Chart({"values": rows})
        .mark_bar()
        .encode(
            x=alt.X("lo:Q", title="Calibrated P(tumor)", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            x2="hi:Q",
            y=alt.Y("sum(scans):Q", title="Scans", stack=True, axis=COUNT_AXIS),
            color=_outcome_colour(),
            tooltip=[alt.Tooltip("outcome:N"), alt.Tooltip("sum(scans):Q", title="scans")],
        )
    )
    layers: list[Any] = [bars]
    if threshold is not None:
        rule = (
            alt.Chart({"values": [{"t": threshold}]})
            .mark_rule(strokeDash=[5, 3], color="#111")
            .encode(x="t:Q", tooltip=[alt.Tooltip("t:Q", title="threshold", format=".1%")])
        )
        layers.append(rule)
    return alt.LayerChart(layer=layers, height=HEIGHT)


def per_day(days: Iterable[tuple[dt.date, str, int]], first: dt.date, last: dt.date) -> alt.Chart:
    """Scans per day from ``first`` to ``last`` (days without scans shown as gaps at zero), stacked by outcome."""
    counts: Counter[tuple[dt.date, str]] = Counter()
    for d, outcome, n in days:
        counts[(d, OUTCOME_NAMES.get(outcome, outcome))] += n
    rows = [{"date": d.isoformat(), "outcome": b, "scans": n} for (d, b), n in sorted(counts.items())]
    span = max((last - first).days, 0)
    chart: alt.Chart = (
        alt.Chart({"values": rows}, height=DAY_HEIGHT)
        .mark_bar(width={"band": 0.85} if span <= 120 else 2)
        .encode(
            x=alt.X(
                "date:T",
                title=None,
                timeUnit="yearmonthdate",
                scale=alt.Scale(domain=[first.isoformat(), (last + dt.timedelta(days=1)).isoformat()]),
                axis=alt.Axis(format="%b %d", labelAngle=0),
            ),
            y=alt.Y("sum(scans):Q", title="Scans", axis=COUNT_AXIS),
            color=_outcome_colour(),
            tooltip=[
                alt.Tooltip("date:T", format="%Y-%m-%d"),
                alt.Tooltip("outcome:N"),
                alt.Tooltip("sum(scans):Q", title="scans"),
            ],
        )
    )
    return chart


def counts_per_day(series: Sequence[tuple[dt.date, int]]) -> alt.Chart:
    """A plain daily count series (the admin's site-wide activity)."""
    rows = [{"date": d.isoformat(), "scans": n} for d, n in series]
    chart: alt.Chart = (
        alt.Chart({"values": rows}, height=DAY_HEIGHT)
        .mark_bar(color="#1565c0")
        .encode(
            x=alt.X("date:T", title=None, timeUnit="yearmonthdate", axis=alt.Axis(format="%b %d", labelAngle=0)),
            y=alt.Y("scans:Q", title="Scans", axis=COUNT_AXIS),
            tooltip=[alt.Tooltip("date:T", format="%Y-%m-%d"), alt.Tooltip("scans:Q")],
        )
    )
    return chart


def ranking(rows: Sequence[tuple[str, int]], what: str, colour: str = "#1565c0") -> alt.LayerChart:
    """Horizontal bars, largest first, with their values (top users, scans per model)."""
    data = [{"name": name, "value": n} for name, n in rows]
    base = alt.Chart({"values": data}).encode(
        y=alt.Y("name:N", sort="-x", title=None, axis=alt.Axis(labelLimit=220)),
        x=alt.X("value:Q", title=what, axis=COUNT_AXIS),
        tooltip=[alt.Tooltip("name:N"), alt.Tooltip("value:Q", title=what)],
    )
    bars = base.mark_bar(color=colour, cornerRadiusEnd=3)
    text = base.mark_text(align="left", dx=4).encode(text="value:Q")
    return alt.LayerChart(layer=[bars, text], height=90 + 30 * len(data))


def slice_curve(
    curve: Sequence[float | None],
    outcomes: Sequence[str | None],
    threshold: float,
    refer_low: float,
    refer_high: float,
    chosen: int | None = None,
) -> alt.LayerChart:
    """P(tumor) per slice of one series in slice order (numbered as the API numbers them: 0 = the first of the
    stack), each point in its outcome's colour, over the referral band (shaded) and the decision threshold (dashed);
    slices that could not be assessed sit as grey marks on the axis, and ``chosen`` is the slice on screen."""
    rows = [
        {
            "slice": k,
            "p": p,
            "outcome": OUTCOME_NAMES.get(o or "", o or "") if p is not None else NOT_ASSESSED,
        }
        for k, (p, o) in enumerate(zip(curve, outcomes, strict=True))
    ]
    scored = [r for r in rows if r["p"] is not None]
    missing = [{**r, "p": 0.0} for r in rows if r["p"] is None]
    last = max(len(rows) - 1, 1)
    slices = alt.Scale(domain=[0, last], nice=False, zero=False)  # every layer's, so none widens it
    x = alt.X("slice:Q", title="Slice", scale=slices, axis=alt.Axis(tickMinStep=1, format="d"))
    y = alt.Y("p:Q", title="Calibrated P(tumor)", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"))
    domain = [*OUTCOME_ORDER, NOT_ASSESSED]
    colour = alt.Color(
        "outcome:N",
        title="Slice outcome",
        scale=alt.Scale(domain=domain, range=[*(OUTCOME_COLOURS[b] for b in OUTCOME_ORDER), NOT_ASSESSED_COLOUR]),
        legend=alt.Legend(orient="bottom"),
    )
    tooltip = [alt.Tooltip("slice:Q"), alt.Tooltip("p:Q", title="P(tumor)", format=".1%"), alt.Tooltip("outcome:N")]
    band = (
        alt.Chart({"values": [{"lo": refer_low, "hi": refer_high, "x0": 0, "x1": last}]})
        .mark_rect(color=OUTCOME_COLOURS["Refer"], opacity=0.13)
        .encode(
            x=alt.X("x0:Q", title="Slice", scale=slices),
            x2="x1:Q",
            y=alt.Y("lo:Q", title="Calibrated P(tumor)"),
            y2="hi:Q",
            tooltip=[
                alt.Tooltip("lo:Q", title="referral band from", format=".1%"),
                alt.Tooltip("hi:Q", title="to", format=".1%"),
            ],
        )
    )
    cut = (
        alt.Chart({"values": [{"t": threshold}]})
        .mark_rule(strokeDash=[5, 3], color="#111")
        .encode(
            y=alt.Y("t:Q", title="Calibrated P(tumor)"), tooltip=[alt.Tooltip("t:Q", title="threshold", format=".1%")]
        )
    )
    layers: list[Any] = [band, cut]
    if chosen is not None and 0 <= chosen < len(rows):
        marker = (
            alt.Chart({"values": [{"slice": chosen}]})
            .mark_rule(color="#1565c0", strokeWidth=2)
            .encode(
                x=alt.X("slice:Q", title="Slice", scale=slices), tooltip=[alt.Tooltip("slice:Q", title="on screen")]
            )
        )
        layers.append(marker)
    line = alt.Chart({"values": scored}).mark_line(color="#455a64", strokeWidth=1.5).encode(x=x, y=y)
    points = (
        alt.Chart({"values": scored}).mark_circle(size=70, opacity=1).encode(x=x, y=y, color=colour, tooltip=tooltip)
    )
    layers += [line, points]
    if missing:
        layers.append(
            alt.Chart({"values": missing})
            .mark_point(shape="cross", size=60, filled=True)
            .encode(x=x, y=y, color=colour, tooltip=[alt.Tooltip("slice:Q"), alt.Tooltip("outcome:N")])
        )
    return alt.LayerChart(layer=layers, height=CURVE_HEIGHT)
