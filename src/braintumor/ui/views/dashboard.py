"""Dashboard: your scans at a glance — totals, outcome mix, mean probability, models, and three plots.

Why one call: the numbers come from ``/history/stats``, computed by the server over your whole period, instead of
paging through the history; cached until a change (or two minutes).
"""

from __future__ import annotations

import datetime as dt

import streamlit as st

from braintumor.ui import charts, components, state
from braintumor.ui.records import ScanStats

PERIODS = {"7 days": 7, "30 days": 30, "90 days": 90, "All time": None}


def _utc_offset_minutes() -> int:
    offset = components.local_time(dt.datetime.now(dt.UTC)).utcoffset()
    return int(offset.total_seconds() // 60) if offset else 0


def load(days: int | None) -> ScanStats:
    """The user's numbers for the last ``days`` days (in the browser's time zone; all time when ``None``)."""
    today = components.local_time(dt.datetime.now(dt.UTC)).date()
    date_from = today - dt.timedelta(days=days - 1) if days else None
    return state.api().scan_stats(date_from, _utc_offset_minutes())


def render() -> None:
    st.title("Dashboard")
    period = st.segmented_control("Period", list(PERIODS), default="30 days", key="dashboard_period")
    days = PERIODS[period or "30 days"]
    stats = state.cached("dashboard", days, lambda: load(days), ttl=120)
    if not stats.scans:
        st.info("No scans in this period yet: analyze one on the Analyze page.")
        return

    n = stats.scans
    count = {o: stats.outcomes.get(o, 0) for o in components.OUTCOMES}
    a, b, c, d = st.columns(4)
    a.metric("Scans", f"{n}", border=True)
    b.metric("Tumor", f"{count['tumor']}", help=f"{components.percent(count['tumor'] / n)} of {n}", border=True)
    c.metric("Refer for review", f"{count['refer']}", help=f"{components.percent(count['refer'] / n)} of {n}",
             border=True)  # fmt: skip
    d.metric("No tumor", f"{count['no_tumor']}", help=f"{components.percent(count['no_tumor'] / n)} of {n}",
             border=True)  # fmt: skip
    if stats.mean_p_tumor is not None:
        st.caption(f"Mean calibrated P(tumor) {components.percent(stats.mean_p_tumor)}.")

    left, right = st.columns(2)
    with left:
        with st.container(border=True):
            st.markdown("**Outcome mix**")
            st.altair_chart(charts.outcome_mix({o: k for o, k in count.items() if k}), width="stretch")
        with st.container(border=True):
            st.markdown("**Scans per model**")
            st.altair_chart(charts.ranking(list(stats.models), "Scans", "#455a64"), width="stretch")
    with right, st.container(border=True):
        st.markdown("**Probability distribution**")
        st.altair_chart(charts.probability_histogram(dict(stats.histogram), stats.threshold), width="stretch")
        if stats.threshold is not None:
            st.caption(
                f"Dashed line: the operating threshold {components.percent(stats.threshold)} of the newest scan's "
                "model, which its referral band surrounds."
            )

    with st.container(border=True):
        st.markdown("**Activity per day**")
        last = components.local_time(dt.datetime.now(dt.UTC)).date()
        first = last - dt.timedelta(days=days - 1) if days else min(d for d, _, _ in stats.per_day)
        shown = [(d, o, k) for d, o, k in stats.per_day if first <= d <= last]
        st.altair_chart(charts.per_day(shown, first, last), width="stretch")
