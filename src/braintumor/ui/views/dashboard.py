"""Dashboard: your scans at a glance — totals, share with tumour, mean probability, models, and three plots.

Why computed here: the API's statistics are site-wide and for administrators; a user's own numbers come from
their history (100 scans per call, at most :data:`MAX_SCANS`), fetched once and reused until a change.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import streamlit as st

from braintumor.ui import charts, components, state
from braintumor.ui.client import Scan

PERIODS = {"7 days": 7, "30 days": 30, "90 days": 90, "All time": None}
MAX_SCANS = 5000
PAGE_SIZE = 100


def load(days: int | None) -> tuple[list[Scan], bool]:
    """The user's scans of the last ``days`` days (all when ``None``) and whether the list was cut short."""
    date_from = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days - 1) if days else None
    api = state.api()
    scans: list[Scan] = []
    page = 1
    while True:
        result = api.history(page, PAGE_SIZE, date_from=date_from)
        scans.extend(result.items)
        if page >= result.pages or len(scans) >= MAX_SCANS:
            return scans[:MAX_SCANS], result.total > MAX_SCANS
        page += 1


def render() -> None:
    st.title("Dashboard")
    period = st.segmented_control("Period", list(PERIODS), default="30 days", key="dashboard_period")
    days = PERIODS[period or "30 days"]
    scans, truncated = state.cached("dashboard", days, lambda: load(days), ttl=120)
    if truncated:
        st.caption(f"Showing the newest {MAX_SCANS} scans of this period.")
    if not scans:
        st.info("No scans in this period yet: analyze one on the Analyze page.")
        return

    n = len(scans)
    tumor = sum(s.label == "tumor" for s in scans)
    refer = sum(s.band == "refer" for s in scans)
    mean_p = sum(s.p_tumor for s in scans) / n
    models = Counter(f"{s.model_name} v{s.model_version}" for s in scans)
    a, b, c, d = st.columns(4)
    a.metric("Scans", f"{n}", border=True)
    b.metric("With tumor", components.percent(tumor / n), help=f"{tumor} of {n} labelled tumor", border=True)
    c.metric("Mean P(tumor)", components.percent(mean_p), border=True)
    d.metric("Referred for review", f"{refer}", help="Scans in the model's referral band", border=True)

    left, right = st.columns(2)
    with left:
        with st.container(border=True):
            st.markdown("**Result mix**")
            st.altair_chart(charts.band_mix(dict(Counter(s.band for s in scans))), width="stretch")
        with st.container(border=True):
            st.markdown("**Scans per model**")
            st.altair_chart(charts.ranking(models.most_common(), "Scans", "#455a64"), width="stretch")
    with right, st.container(border=True):
        st.markdown("**Probability distribution**")
        threshold = scans[0].threshold  # the newest scan's model
        st.altair_chart(charts.probability_histogram([(s.p_tumor, s.band) for s in scans], threshold), width="stretch")
        st.caption(f"Dashed line: decision threshold {components.percent(threshold)} of the current model.")

    with st.container(border=True):
        st.markdown("**Activity per day**")
        local = [(components.local_time(s.created_at).date(), s.band) for s in scans]
        last = components.local_time(dt.datetime.now(dt.UTC)).date()
        first = last - dt.timedelta(days=days - 1) if days else min(d for d, _ in local)
        shown = [(d, band) for d, band in local if first <= d <= last]
        st.altair_chart(charts.per_day(shown, first, last), width="stretch")
