"""The study page: one study scored slice by slice, read the way a clinician reads a series.

Why a page of its own rather than the scan viewer: a study's answer is not one slice's. It comes from the study rule
over every slice (tumor when enough consecutive slices are), so the page leads with that outcome, its reason, the
rule and the note that the slice model was validated on 2-D slices, not on studies; then the p(tumor) curve over
the slices (with the decision threshold and the referral band), a scrubber that shows any slice beside its Grad-CAM
overlay with that slice's own answer, the top slices as thumbnails that move the scrubber, and what the upload held
that was not scored (skipped series, refused files), with why. Analyze (after an upload) and History (a study row)
both draw it with :func:`page`.

Every image is the server's own PNG (the slice as the model saw it and its overlay), fetched once per session:
stored files never change, so moving the scrubber back costs no call.

Example:
    >>> page(study_id, key="history_study", on_deleted=close)  # doctest: +SKIP
"""

from __future__ import annotations

import html
from collections.abc import Callable

import streamlit as st
from PIL import Image

from braintumor.ui import charts, components, imaging, state
from braintumor.ui.client import ApiError
from braintumor.ui.records import Study, StudySeries, StudySlice

#: How many top slices are shown as thumbnails.
TOP_SHOWN = 6
THUMB_WIDTH = 200
STATUS_NAMES = {"ok": "Assessed", "not_assessable": "Not assessable", "error": "Error"}


def load(study_id: str) -> Study:
    """The study, fetched once per session (until a change invalidates ``studies``)."""
    return state.cached("studies", study_id, lambda: state.api().study(study_id))


def page(study_id: str, key: str, on_deleted: Callable[[], None]) -> None:
    """The study page for ``study_id``; ``key`` prefixes its widgets, ``on_deleted`` closes it after a delete."""
    try:
        study = load(study_id)
    except ApiError as exc:
        st.error(f"This study cannot be shown: {state.reason(exc)}")
        return
    show(study, key, on_deleted)


def show(study: Study, key: str, on_deleted: Callable[[], None]) -> None:
    """Everything about one study, in reading order."""
    st.title(study.filename)
    n_series = len(study.series)
    st.caption(
        f":material/stacks: Study · {len(study.slices)} slice{'s' if len(study.slices) != 1 else ''} in {n_series} "
        f"series · {'NIfTI volume' if study.source_kind == 'nifti' else 'DICOM'}"
        f"{' · de-identified' if study.deidentified else ''} · analysed {components.when(study.created_at)} · "
        f"study id {study.id}"
    )
    banner(study)
    rule_and_note(study)
    if not study.series:
        st.info("No series of this study was scored.")
    else:
        series = choose_series(study, key)
        scrubber(study, series, key)
        top_slices(study, series, key)
    not_scored(study)
    report(study, key)
    delete(study, key, on_deleted)
    st.caption(study.disclaimer or "Decision support, not a diagnosis: every result must be reviewed by a clinician.")


def banner(study: Study) -> None:
    """The study's answer and its reason, in the colours of a scan's answer."""
    title, colour, _ = components.OUTCOMES.get(study.outcome, (study.outcome, "#333", ""))
    kind = f" · type: <b>{html.escape(study.tumor_type)}</b>" if study.tumor_type else ""
    st.markdown(
        f'<div class="bt-banner" style="--bt-colour:{colour}"><h3>{html.escape(title)}</h3>'
        f"<p>Study outcome: {html.escape(study.reason)}</p>"
        f"<p><small>Highest calibrated P(tumor) of a slice <b>{components.percent(study.p_tumor)}</b>{kind} · "
        f"referral band {components.percent(study.refer_low)}–{components.percent(study.refer_high)} · model "
        f"{html.escape(study.model_name)} v{html.escape(study.model_version)}</small></p></div>",
        unsafe_allow_html=True,
    )


def rule_text(rule: dict[str, object]) -> str:
    """The study rule in words.

    >>> rule_text({"consecutive": 2, "min_coverage": 0.5})[:52]
    'Study rule: tumor when 2 consecutive assessed slices'
    """
    run = rule.get("consecutive", "?")
    coverage = rule.get("min_coverage")
    share = f"{coverage:.0%}" if isinstance(coverage, int | float) else "enough"
    return (
        f"Study rule: tumor when {run} consecutive assessed slices are tumor; no tumor only when every assessed slice "
        f"is no tumor and at least {share} of the slices could be assessed; otherwise refer for review."
    )


def rule_and_note(study: Study) -> None:
    st.caption(rule_text(study.rule))
    st.info(study.note or "The slice model was validated on 2-D slices, not studies.", icon=":material/info:")


def choose_series(study: Study, key: str) -> StudySeries:
    """The series on screen (a choice only when several were scored), with its own outcome and reason."""
    index = 0
    if len(study.series) > 1:
        names = [f"{s.description or s.series_uid[-12:]} ({s.slices} slices)" for s in study.series]
        index = int(
            st.selectbox("Series", range(len(study.series)), format_func=lambda k: names[k], key=f"{key}_series") or 0
        )
    series = study.series[index]
    verdict = components.pill(series.outcome) if series.outcome else "not assessed"
    what = f"{series.description or 'Series'} · {series.modality or '?'} · {series.slices} slices, {series.assessed} "
    st.markdown(
        f"**{html.escape(what)}assessed** · series outcome {verdict} — {html.escape(series.reason)}",
        unsafe_allow_html=True,
    )
    for note in series.notes:
        st.caption(f":material/info: {note}")
    return series


def series_slices(study: Study, series: StudySeries) -> list[StudySlice]:
    """The slices of ``series`` in slice order."""
    return sorted((s for s in study.slices if s.series_uid == series.series_uid), key=lambda s: s.index)


def slider_key(key: str, series: StudySeries) -> str:
    return f"{key}_slice_{series.series_uid}"


def scrubber(study: Study, series: StudySeries, key: str) -> None:
    """The p(tumor) curve, the slice scrubber under it, and the chosen slice beside its overlay."""
    slices = series_slices(study, series)
    if not slices:
        st.info("No slice of this series was kept.")
        return
    wanted = slider_key(key, series)
    if wanted not in st.session_state:  # start on the series' most suspicious slice
        first = series.top_slices[0] if series.top_slices else 0
        st.session_state[wanted] = min(max(first, 0), len(slices) - 1)
    chosen = int(st.session_state[wanted])
    st.markdown("##### P(tumor) per slice")
    curve = [s.p_tumor for s in slices]
    st.altair_chart(
        charts.slice_curve(
            curve, [s.outcome for s in slices], study.threshold, study.refer_low, study.refer_high, chosen
        ),
        width="stretch",
    )
    st.caption(
        f"Dashed: the decision threshold ({components.percent(study.threshold)}); shaded: the referral band "
        f"({components.percent(study.refer_low)}–{components.percent(study.refer_high)}); grey crosses: slices that "
        "could not be assessed. The blue line is the slice shown below."
    )
    if len(slices) > 1:
        st.slider(
            "Slice",
            0,
            len(slices) - 1,
            step=1,
            key=wanted,
            help="Move through the series in slice order; numbered as the study's reason numbers them (0 = the first "
            "of the stack).",
        )
    chosen = int(st.session_state[wanted])
    slice_view(slices[min(max(chosen, 0), len(slices) - 1)], len(slices))


def slice_image(url: str | None) -> Image.Image | None:
    """A slice view or overlay the server rendered, enlarged for the screen (``None`` when it has none)."""
    if url is None:
        return None
    data = state.cached("files", url, lambda: state.api().fetch(url))
    return imaging.enlarge(imaging.decode(data), components.VIEW_WIDTH)


def slice_view(item: StudySlice, total: int) -> None:
    """One slice beside its Grad-CAM overlay, with that slice's own outcome, probability, status and reason."""
    a, b, c = st.columns(3)
    a.metric("Slice outcome", components.OUTCOME_NAMES.get(item.outcome or "", "—"))
    b.metric("Slice P(tumor)", components.percent(item.p_tumor) if item.p_tumor is not None else "—")
    c.metric("Status", STATUS_NAMES.get(item.status, item.status))
    where = [f"slice {item.index} of 0–{total - 1}"]
    if item.position is not None:
        where.append(f"position {item.position:g} mm")
    if item.instance_number is not None:
        where.append(f"instance {item.instance_number}")
    if item.frame is not None:
        where.append(f"frame {item.frame + 1}")
    if item.source:
        where.append(f"file {item.source}")
    st.caption(" · ".join(where) + (f" · {item.reason}" if item.reason else ""))
    left, right = st.columns(2)
    try:
        view, overlay = slice_image(item.image_url), slice_image(item.overlay_url)
    except imaging.DisplayError as exc:
        st.info(str(exc))
        return
    if view is not None:
        left.image(view, caption=f"Slice {item.index}", width="stretch")
    else:
        left.info(f"No view was stored for this slice{': ' + item.reason if item.reason else ''}.")
    if overlay is not None:
        right.image(overlay, caption="Grad-CAM overlay", width="stretch")
        right.image(imaging.colorbar(components.VIEW_WIDTH // 2, 10), caption="low ← model attention → high")
    elif view is not None:
        right.info("No heatmap for this slice: it was not assessed.")


def top_slices(study: Study, series: StudySeries, key: str) -> None:
    """The series' most suspicious slices as thumbnails; each one's button moves the scrubber to it."""
    slices = series_slices(study, series)
    by_index = {s.index: s for s in slices}
    top = [by_index[k] for k in series.top_slices if k in by_index][:TOP_SHOWN]
    if not top:
        return
    st.markdown("##### Top slices")
    wanted = slider_key(key, series)

    def jump(index: int) -> None:
        st.session_state[wanted] = index

    columns = st.columns(len(top) if len(top) > 3 else TOP_SHOWN // 2)
    for column, item in zip(columns, top, strict=False):
        try:
            thumb = slice_image(item.overlay_url or item.image_url)
        except imaging.DisplayError:
            thumb = None
        if thumb is not None:
            column.image(thumb.resize((THUMB_WIDTH, max(1, round(thumb.height * THUMB_WIDTH / thumb.width)))))
        p = components.percent(item.p_tumor) if item.p_tumor is not None else "—"
        column.button(
            f"Slice {item.index} · {p}",
            key=f"{key}_top_{series.series_uid}_{item.index}",
            on_click=jump,
            args=(item.index,),
            icon=":material/my_location:",
            width="stretch",
        )


def not_scored(study: Study) -> None:
    """The series the rules left out and the files that could not be used, each with its reason."""
    if not study.skipped_series and not study.problems:
        return
    count = len(study.skipped_series) + len(study.problems)
    with st.expander(f"Not scored: {count} series or file{'s' if count != 1 else ''}", expanded=True):
        if study.skipped_series:
            st.markdown("**Skipped series**")
            st.dataframe(
                [{"Series": s.description or s.series_uid, "Why": s.reason} for s in study.skipped_series],
                hide_index=True,
                width="stretch",
            )
        if study.problems:
            st.markdown("**Refused files**")
            st.dataframe(
                [{"File": p.source, "Why": p.reason} for p in study.problems], hide_index=True, width="stretch"
            )


def report(study: Study, key: str) -> None:
    """Download the study's PDF report; while the server has none, its address and the reason."""

    def fetch() -> bytes | str:
        try:
            return state.api().fetch(study.report_url)
        except ApiError as exc:
            return state.reason(exc)

    pdf = state.cached("reports", ("study", study.id), fetch)
    if isinstance(pdf, str):
        st.caption(f":material/picture_as_pdf: PDF report: `{study.report_url}` (not available: {pdf})")
        return
    components.pdf_button(study, pdf, key)


def delete(study: Study, key: str, on_deleted: Callable[[], None]) -> None:
    """Delete the study (after a confirmation), with all of its slices' views."""
    st.divider()
    confirm = f"{key}_confirm_delete"
    if st.button("Delete this study", icon=":material/delete:", key=f"{key}_delete"):
        st.session_state[confirm] = True

    def remove() -> None:
        state.api().delete_study(study.id)
        state.invalidate("history", "dashboard", "studies", "reports")
        on_deleted()
        state.set_note(f"Deleted the study {study.filename} with its {len(study.slices)} slices' images.")
        st.rerun()

    components.confirm(
        confirm,
        f"Delete the study {study.filename} permanently? Its {len(study.slices)} slices' images, heatmaps and its "
        "report are removed too; this cannot be undone.",
        remove,
    )
