"""About: what this is, the loaded model's card, intended use and limits, and the server's status."""

from __future__ import annotations

from typing import Any

import streamlit as st

from braintumor import __version__
from braintumor.ui import components, state
from braintumor.ui.client import ApiError
from braintumor.ui.records import Health

INTENDED_USE = """
**Intended use.** A second reader for single 2-D brain MRI slices (JPEG, PNG, BMP, TIFF or DICOM): it estimates the
probability that the slice shows a tumour, sorts it into *tumor*, *refer* (uncertain: needs an expert) or *no
tumor*, and shows where the model looked (Grad-CAM). It supports — never replaces — a qualified clinician.

**Limits.**
- Trained on small public datasets of axial slices from a few sources; accuracy on your scanner, sequence,
  population or plane is unknown until validated locally.
- One slice at a time: no volumes, no prior studies, no clinical context.
- The heatmap shows what drove the model, not the tumour's outline; it is not a segmentation.
- Probabilities are calibrated on held-out data, but a calibrated 90% is still wrong one time in ten.
- Images that do not look like brain MRI slices are refused when the model carries an input gate; a refusal
  is not a clinical statement.
- Not a medical device; not cleared for diagnostic use.
"""


def render() -> None:
    st.title("About")
    st.markdown(
        "**Brain MRI Tumor Detection** reads a brain MRI slice and returns one outcome — tumour, refer for review "
        "or no tumour — with its calibrated probability of tumour, the tumour type when the model has one, each "
        "ensemble member's probability and a Grad-CAM heatmap for the ensemble and for each member. Every "
        "analysis is kept in your private history with a PDF report. DICOM identifiers are "
        "removed before anything is stored."
    )
    left, right = st.columns([3, 2])
    with left, st.container(border=True):
        st.markdown(INTENDED_USE)
    with right:
        try:
            health = state.cached("health", "health", lambda: state.api().health(), ttl=30)
        except ApiError as exc:
            st.error(exc.message)
            health = None
        with st.container(border=True):
            model_card(health)
        with st.container(border=True):
            st.markdown("**System**")
            st.markdown(
                f"- UI version {__version__}\n- API `{state.api_url()}`"
                + (
                    f" · version {health.version} · status **{health.status}**\n- Storage: {health.storage_backend}"
                    f" ({'reachable' if health.storage_reachable else 'unreachable'})"
                    if health
                    else ""
                )
            )


def model_card(health: Health | None) -> None:
    """The loaded model's card summary as the server reports it."""
    st.markdown("**Model card**")
    if health is None:
        st.caption("Unknown: the server cannot be reached.")
        return
    if not health.model_loaded:
        st.warning(f"No model loaded: {health.model_reason or 'unknown reason'}")
        return
    card: dict[str, Any] = health.card
    decision: dict[str, Any] = card.get("decision", {})
    classes = ", ".join(str(c).replace("_", " ") for c in card.get("classes", []))
    st.markdown(
        f"- Name **{card.get('name', health.model_name)}**, version {card.get('version', health.model_version)}\n"
        f"- Classes: {classes or '—'}\n"
        f"- Referral band: {components.percent(float(decision.get('refer_low', 0)))}–"
        f"{components.percent(float(decision.get('refer_high', 0)))} (below: no tumor; inside: refer for review; "
        "above: tumor)\n"
        f"- Operating threshold the band surrounds: {components.percent(float(decision.get('threshold', 0.5)))}"
        + (
            f" (chosen for {components.percent(float(decision['target_sensitivity']))} sensitivity; what evaluation "
            "measures, not a second answer)"
            if decision.get("target_sensitivity")
            else ""
        )
        + "\n"
        f"- Input gate (refuses non-MRI images): {'yes' if card.get('gate') else 'no'}"
    )
    members = card.get("members", [])
    if members:
        st.markdown(f"**Ensemble members** ({len(members)})")
        st.markdown(
            "\n".join(
                f"- **{m.get('name')}**: {m.get('arch')}, {m.get('input_size')} px input, {m.get('precision')}"
                + (f", weight {m.get('weight'):g}" if isinstance(m.get("weight"), int | float) else "")
                for m in members
            )
        )
