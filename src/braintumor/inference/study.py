"""Score a study slice by slice, then give the study one outcome by a stated rule.

Why a rule and not a model: the classifier was trained and validated on 2-D slices, never on studies, so nothing
measured says how to turn 150 slice answers into one. :class:`StudyRule` is a plain, documented rule over the
slice outcomes, and every result says so (:data:`VALIDATION_NOTE`).

Per slice, the predictor runs in batches with its input gate: a slice the gate refuses (an edge slice with little
or no brain, a slice unlike those the model was validated on) is **not assessable**, with the gate's reason, not
an error; a slice that cannot be decoded is an error. Each assessed slice gets the ensemble's own outcome
(``tumor`` / ``refer`` / ``no_tumor``: p(tumor) ≥ the band's top, inside the referral band, below it).

The study rule (defaults ``consecutive = 2``, ``min_coverage = 0.5``), over the assessed slices of a series in
slice order (not-assessable slices are passed over: they neither break nor extend a run):

1. no slice assessed → no outcome (the series is *not assessable*);
2. ``tumor`` when at least ``consecutive`` adjacent assessed slices are ``tumor`` (fewer when the series has fewer
   assessed slices): a lesion spans slices, an isolated positive slice is more often a false positive;
3. else ``refer`` when any slice is ``tumor`` (an isolated one) or ``refer``;
4. else ``refer`` when fewer than ``min_coverage`` of the series' slices could be assessed (too little was seen to
   say no tumor);
5. else ``no_tumor``.

A study with several selected series takes the most severe series outcome (tumor > refer > no tumor); series
without an outcome do not count. The result also lists the most suspicious slices (highest p(tumor)) and the
p(tumor) curve in slice order (``None`` where a slice was not assessed).

Example:
    >>> StudyRule().decide(["no_tumor", "tumor", "tumor", "no_tumor"])
    ('tumor', '2 consecutive tumor slices (slices 1–2)')
    >>> StudyRule().decide(["no_tumor", "tumor", None, "no_tumor"])
    ('refer', '1 tumor slice(s), none 2 in a row; 0 slice(s) in the referral band')
    >>> study = score_studies(predictor, dicom_files, nifti_files)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from braintumor.errors import BrainTumorError, ImageError
from braintumor.imaging.nifti import read_nifti
from braintumor.imaging.series import FileProblem, Series, SeriesLimits, SkippedSeries, SliceRef, read_dicom_series
from braintumor.imaging.series_rules import DEFAULT_RULES, SeriesRules
from braintumor.imaging.types import LoadedImage
from braintumor.inference.predictor import Prediction, Predictor, Rejection
from braintumor.models.decision import Outcome

VALIDATION_NOTE = (
    "The slice model was validated on 2-D slices, not on studies: the study outcome is a stated rule over the "
    "slice outcomes, not a validated study-level classifier. Decision support, not a diagnosis."
)
SliceStatus = Literal["ok", "not_assessable", "error"]
_SEVERITY: dict[Outcome, int] = {"tumor": 2, "refer": 1, "no_tumor": 0}


def slice_outcome(prediction: Prediction) -> Outcome:
    """The one place a slice's answer comes from: the ensemble's decision rule applied to its p(tumor)."""
    return prediction.outcome


@dataclass(frozen=True)
class StudyRule:
    """How slice outcomes become a series outcome (see the module docstring)."""

    consecutive: int = 2
    min_coverage: float = 0.5

    def decide(self, outcomes: Sequence[Outcome | None]) -> tuple[Outcome | None, str]:
        """The outcome for slice outcomes in slice order (``None``: not assessed) and its one-line reason."""
        assessed = [(k, o) for k, o in enumerate(outcomes) if o is not None]
        if not assessed:
            return None, "no slice could be assessed"
        need = max(1, min(self.consecutive, len(assessed)))
        run: list[int] = []
        for k, outcome in assessed:
            run = [*run, k] if outcome == "tumor" else []
            if len(run) >= need:
                return "tumor", f"{need} consecutive tumor slices (slices {_span(run)})"
        tumors = sum(o == "tumor" for _, o in assessed)
        refers = sum(o == "refer" for _, o in assessed)
        if tumors or refers:
            return "refer", (f"{tumors} tumor slice(s), none {need} in a row; {refers} slice(s) in the referral band")
        coverage = len(assessed) / len(outcomes)
        if coverage < self.min_coverage:
            return "refer", (
                f"only {len(assessed)} of {len(outcomes)} slices could be assessed (fewer than "
                f"{self.min_coverage:.0%}): too little seen to say no tumor"
            )
        return (
            "no_tumor",
            f"all {len(assessed)} assessed slices no tumor ({len(outcomes) - len(assessed)} not assessable)",
        )

    def as_dict(self) -> dict[str, Any]:
        return {"consecutive": self.consecutive, "min_coverage": self.min_coverage}


def _span(indices: list[int]) -> str:
    return f"{indices[0]}–{indices[-1]}" if len(indices) > 1 else str(indices[0])


@dataclass(frozen=True)
class SliceResult:
    """One slice's result. ``index`` is its place in slice order (0 = the first: the most inferior of an axial
    stack); ``position`` is in mm along the slice normal."""

    index: int
    ref: SliceRef
    status: SliceStatus
    reason: str = ""
    outcome: Outcome | None = None
    p_tumor: float | None = None
    tumor_type: str | None = None
    heatmap: str | None = None
    prediction: Prediction | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        r = self.ref
        return {
            "index": self.index,
            "source": r.source,
            "frame": r.frame,
            "position": r.position,
            "instance_number": r.instance_number,
            "sop_instance_uid": r.sop_instance_uid,
            "status": self.status,
            "reason": self.reason,
            "outcome": self.outcome,
            "p_tumor": self.p_tumor,
            "tumor_type": self.tumor_type,
            "heatmap": self.heatmap,
        }


@dataclass(frozen=True)
class SeriesResult:
    """A scored series: its slices, its outcome by the rule, the most suspicious slices and the p(tumor) curve."""

    series: Series
    slices: tuple[SliceResult, ...]
    outcome: Outcome | None
    reason: str
    top_slices: tuple[int, ...]

    @property
    def curve(self) -> list[float | None]:
        return [s.p_tumor for s in self.slices]

    def count(self, what: str) -> int:
        return sum(s.outcome == what or s.status == what for s in self.slices)

    def as_dict(self) -> dict[str, Any]:
        s = self.series
        return {
            "study_uid": s.study_uid,
            "series_uid": s.series_uid,
            "kind": s.kind,
            "description": s.description,
            "modality": s.attributes.get("Modality"),
            "ordered_by": s.ordered_by,
            "notes": list(s.notes),
            "outcome": self.outcome,
            "reason": self.reason,
            "slices": len(self.slices),
            "assessed": sum(x.status == "ok" for x in self.slices),
            "top_slices": list(self.top_slices),
            "p_tumor_curve": self.curve,
        }


@dataclass(frozen=True)
class StudyResult:
    """A study's outcome over its selected series, the series skipped (with why), and the validation note."""

    study_uid: str
    source: str
    series: tuple[SeriesResult, ...]
    skipped: tuple[SkippedSeries, ...]
    outcome: Outcome | None
    reason: str
    rule: StudyRule
    note: str = VALIDATION_NOTE

    @property
    def slices(self) -> list[tuple[SeriesResult, SliceResult]]:
        return [(sr, s) for sr in self.series for s in sr.slices]

    def top_slices(self, n: int = 5) -> list[tuple[SeriesResult, SliceResult]]:
        """The ``n`` most suspicious assessed slices over the study (highest p(tumor) first)."""
        scored = [(sr, s) for sr, s in self.slices if s.p_tumor is not None]
        return sorted(scored, key=lambda pair: -(pair[1].p_tumor or 0.0))[:n]

    def as_dict(self) -> dict[str, Any]:
        return {
            "study_uid": self.study_uid,
            "source": self.source,
            "outcome": self.outcome,
            "reason": self.reason,
            "rule": self.rule.as_dict(),
            "note": self.note,
            "series": [s.as_dict() for s in self.series],
            "skipped_series": [
                {"series_uid": k.series.series_uid, "description": k.series.description, "reason": k.reason}
                for k in self.skipped
            ],
            "top_slices": [
                {"series_uid": sr.series.series_uid, "index": s.index, "p_tumor": s.p_tumor}
                for sr, s in self.top_slices()
            ],
        }


# -- scoring ----------------------------------------------------------------------------------------------
SliceHook = Callable[[Series, SliceResult, LoadedImage, Prediction], str | None]


def score_series(
    predictor: Predictor,
    series: Series,
    *,
    rule: StudyRule | None = None,
    batch_size: int = 16,
    cam: bool = False,
    on_slice: SliceHook | None = None,
    top: int = 5,
) -> SeriesResult:
    """Every slice of ``series`` through the predictor in batches (gate per slice), then the rule.

    ``on_slice(series, result, image, prediction)`` runs for each assessed slice (e.g. to write its heatmap; what
    it returns is kept as the slice's ``heatmap``); ``cam`` asks the predictor for Grad-CAM maps.
    """
    rule = rule or StudyRule()
    results: list[SliceResult] = []
    for chunk in _chunks(zip(series.slices, series.images(), strict=True), batch_size):
        images = [img for _, img in chunk if isinstance(img, LoadedImage)]
        try:
            answers: Iterator[Prediction | Rejection | str] = iter(predictor.predict_batch(images, cam=cam))
        except BrainTumorError as exc:  # a model-level failure: said per slice, the run goes on
            answers = iter([str(exc)] * len(images))
        for ref, img in chunk:
            index = len(results)
            if not isinstance(img, LoadedImage):
                results.append(SliceResult(index, ref, "error", str(img)))
                continue
            answer = next(answers)
            if isinstance(answer, str):
                results.append(SliceResult(index, ref, "error", answer))
            elif isinstance(answer, Rejection):
                results.append(SliceResult(index, ref, "not_assessable", f"{answer.kind}: {answer.reason}"))
            else:
                result = SliceResult(index, ref, "ok", "", slice_outcome(answer), answer.p_tumor, answer.tumor_type,
                                     None, answer)  # fmt: skip
                if on_slice is not None:
                    result = dataclasses.replace(result, heatmap=on_slice(series, result, img, answer))
                results.append(result)
    outcome, reason = rule.decide([s.outcome for s in results])
    ranked = sorted((s for s in results if s.p_tumor is not None), key=lambda s: -(s.p_tumor or 0.0))
    return SeriesResult(series, tuple(results), outcome, reason, tuple(s.index for s in ranked[:top]))


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def study_result(
    study_uid: str, source: str, series: Sequence[SeriesResult], skipped: Sequence[SkippedSeries], rule: StudyRule
) -> StudyResult:
    """Combine a study's series: the most severe series outcome, with its reason."""
    decided = [s for s in series if s.outcome is not None]
    if not decided:
        reason = "no selected series" if not series else "no slice of any selected series could be assessed"
        return StudyResult(study_uid, source, tuple(series), tuple(skipped), None, reason, rule)
    worst = max(decided, key=lambda s: _SEVERITY[s.outcome] if s.outcome else -1)
    reason = (
        worst.reason
        if len(series) == 1
        else f"series {worst.series.description or worst.series.series_uid}: {worst.reason}"
    )
    return StudyResult(study_uid, source, tuple(series), tuple(skipped), worst.outcome, reason, rule)


@dataclass(frozen=True)
class StudyRun:
    """What :func:`score_studies` found: the studies, and the files that joined none (with why)."""

    studies: list[StudyResult]
    problems: list[FileProblem]


def score_studies(
    predictor: Predictor,
    dicom_files: Sequence[str | Path | tuple[str, bytes]] = (),
    nifti_files: Sequence[str | Path | tuple[str, bytes]] = (),
    *,
    rules: SeriesRules | None = None,
    rule: StudyRule | None = None,
    limits: SeriesLimits | None = None,
    batch_size: int = 16,
    cam: bool = False,
    on_slice: SliceHook | None = None,
) -> StudyRun:
    """Read DICOM files into series (grouped by study) and NIfTI files (one study each), keep the series
    ``rules`` select, score each kept series, and give each study its outcome. Bad files are problems, not errors;
    limits past their caps raise (:class:`~braintumor.errors.ImageTooLargeError`)."""
    rules = rules or SeriesRules.from_dict(DEFAULT_RULES)
    rule = rule or StudyRule()
    limits = limits or SeriesLimits()
    dicom_sources = [f if isinstance(f, tuple) else str(f) for f in dicom_files]
    series, problems = read_dicom_series(dicom_sources, limits=limits) if dicom_sources else ([], [])
    studies: list[StudyResult] = []
    by_study: dict[str, list[Series]] = {}
    for s in series:
        by_study.setdefault(s.study_uid, []).append(s)
    for study_uid, members in by_study.items():
        kept, skipped = rules.select(members)
        scored = [score_series(predictor, s, rule=rule, batch_size=batch_size, cam=cam, on_slice=on_slice)
                  for s in kept]  # fmt: skip
        studies.append(study_result(study_uid, _common_folder(members), scored, skipped, rule))
    for source in nifti_files:
        name = source[0] if isinstance(source, tuple) else str(source)
        try:
            volume = read_nifti(source[1] if isinstance(source, tuple) else source, name=name, limits=limits)
        except ImageError as exc:
            problems.append(FileProblem(name, str(exc)))
            continue
        kept, skipped = rules.select([volume])
        scored = [score_series(predictor, s, rule=rule, batch_size=batch_size, cam=cam, on_slice=on_slice)
                  for s in kept]  # fmt: skip
        studies.append(study_result("", name, scored, skipped, rule))
    return StudyRun(studies, problems)


def _common_folder(members: Sequence[Series]) -> str:
    parents = sorted({str(Path(r.source).parent) for s in members for r in s.slices})
    try:
        return os.path.commonpath(parents) if parents else ""
    except ValueError:  # relative and absolute paths mixed
        return parents[0]


# -- rows for the batch CLI -------------------------------------------------------------------------------
#: One row per study (``braintumor predict --studies FILE``).
STUDY_COLUMNS = ("study_uid", "source", "outcome", "reason", "series", "slices", "assessed", "tumor_slices",
                 "refer_slices", "top_slices", "p_tumor_curve", "skipped_series", "note")  # fmt: skip


def slice_rows(run: StudyRun, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One batch row per slice of every scored series (the batch columns, with ``study_uid``, ``series_uid``,
    ``slice`` and ``slice_position``), then one per file of a skipped series (``skipped``) and per problem."""
    from braintumor.inference.batch import columns

    empty = dict.fromkeys(columns(class_names), "")
    rows: list[dict[str, Any]] = []
    for study in run.studies:
        for sr, s in study.slices:
            row: dict[str, Any] = {**empty, "path": s.ref.source, "study_uid": sr.series.study_uid,
                   "series_uid": sr.series.series_uid, "slice": s.index,
                   "slice_position": "" if s.ref.position is None else s.ref.position,
                   "status": s.status, "reason": s.reason, "heatmap": s.heatmap or ""}  # fmt: skip
            if s.prediction is not None:
                p = s.prediction
                row.update(outcome=s.outcome, p_tumor=round(p.p_tumor, 6), tumor_type=p.tumor_type or "",
                           threshold=round(p.decision.threshold, 6), model=p.model_name,
                           model_version=p.model_version)  # fmt: skip
                row.update({f"p_{name}": round(v, 6) for name, v in p.probs.items()})
            rows.append(row)
        for skipped in study.skipped:
            for source in dict.fromkeys(r.source for r in skipped.series.slices):
                uids = {"study_uid": skipped.series.study_uid, "series_uid": skipped.series.series_uid}
                rows.append({**empty, "path": source, "status": "skipped", "reason": skipped.reason, **uids})
    rows.extend({**empty, "path": p.source, "status": "error", "reason": p.reason} for p in run.problems)
    return rows


def study_rows(run: StudyRun) -> list[dict[str, Any]]:
    """One row per study: its outcome and reason, counts, the top slices and the p(tumor) curve per series."""
    rows = []
    for study in run.studies:
        slices = [s for _, s in study.slices]
        rows.append(
            {
                "study_uid": study.study_uid,
                "source": study.source,
                "outcome": study.outcome or "",
                "reason": study.reason,
                "series": " ".join(s.series.series_uid or s.series.kind for s in study.series),
                "slices": len(slices),
                "assessed": sum(s.status == "ok" for s in slices),
                "tumor_slices": sum(s.outcome == "tumor" for s in slices),
                "refer_slices": sum(s.outcome == "refer" for s in slices),
                "top_slices": " ".join(f"{s.index}:{s.p_tumor:.3f}" for _, s in study.top_slices()),
                "p_tumor_curve": " | ".join(
                    " ".join("" if p is None else f"{p:.3f}" for p in sr.curve) for sr in study.series
                ),
                "skipped_series": "; ".join(
                    f"{k.series.description or k.series.series_uid}: {k.reason}" for k in study.skipped
                ),
                "note": study.note,
            }
        )
    return rows
