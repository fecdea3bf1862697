"""DICOM results for scored series: collect each assessed slice while a study is scored, then one SR per series.

Why: a series of 150 slices deserves one structured report that states the series' answer (the study rule's, not
one slice's) and references every slice that was assessed, beside one Secondary Capture of the overlay per slice —
and it must come from the scoring run itself, not from decoding and predicting every file a second time.
:class:`SliceCollector` is the ``on_slice`` hook of :func:`braintumor.inference.study.score_studies` that keeps what
the writers of :mod:`braintumor.interop.dicom_out` need (the header, the pixels the model saw, its answer);
:func:`finding_of` turns a series' or study's outcome and its most suspicious slice into the SR's
:class:`~braintumor.interop.dicom_out.Finding`; :func:`write_series_results` writes one SR + SCs per series.

Example:
    >>> collect = SliceCollector(read=lambda name: files[name])  # doctest: +SKIP
    >>> run = score_studies(predictor, dicom_files, cam=True, on_slice=collect)  # doctest: +SKIP
    >>> written = write_series_results(run.studies, collect, "results/")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from braintumor.imaging.series import Series
from braintumor.imaging.types import LoadedImage
from braintumor.inference.predictor import Prediction
from braintumor.inference.study import SliceResult, StudyResult
from braintumor.interop.answers import Finding
from braintumor.interop.dicom_out import AnalysedSlice, DicomResults, write_dicom_results
from braintumor.models.decision import Outcome


class SliceCollector:
    """The ``on_slice`` hook that keeps every assessed DICOM slice as an :class:`AnalysedSlice`, by series.

    ``read(source)`` gives a slice's file bytes by the name the series refers to (a path's bytes, or an upload's);
    a NIfTI slice has no DICOM header and is passed over. Each file's header is parsed once, whatever its frames.
    """

    def __init__(self, read: Callable[[str], bytes]) -> None:
        self.read = read
        self.by_series: dict[str, list[AnalysedSlice]] = {}
        self._headers: dict[str, Any] = {}

    def __call__(self, series: Series, result: SliceResult, image: LoadedImage, prediction: Prediction) -> None:
        if series.kind != "dicom":
            return
        source = result.ref.source
        if source not in self._headers:
            self._headers = {source: AnalysedSlice.from_bytes(self.read(source), image, prediction).source}
        self.by_series.setdefault(series.series_uid, []).append(AnalysedSlice(self._headers[source], image, prediction))


def finding_of(outcome: Outcome, slices: Sequence[AnalysedSlice]) -> Finding:
    """The SR's finding for a series or study answered ``outcome`` by the study rule: that outcome, with the
    p(tumor) and tumor type of its most suspicious slice."""
    top = max(slices, key=lambda a: a.prediction.p_tumor)
    kind = top.prediction.tumor_type
    return Finding(outcome, top.prediction.p_tumor, kind, top.prediction.type_probs.get(kind) if kind else None)


def write_series_results(
    studies: Sequence[StudyResult], collected: SliceCollector, out_dir: str | Path, *, alpha: float = 0.4
) -> list[tuple[str, DicomResults | str]]:
    """One SR (the series' outcome by the study rule) and one SC per assessed slice for every scored DICOM series
    that has an outcome, into ``out_dir``: (series uid, the files written, or why none could be) per series — a
    header highdicom cannot build from is that series' one-line reason, and the others go on."""
    written: list[tuple[str, DicomResults | str]] = []
    for study in studies:
        for series in study.series:
            uid = series.series.series_uid
            slices = collected.by_series.get(uid, [])
            if series.outcome is None or not slices:
                continue
            try:
                result: DicomResults | str = write_dicom_results(
                    slices, out_dir, finding=finding_of(series.outcome, slices), alpha=alpha
                )
            # highdicom refuses a header it cannot build from with ValueError, TypeError, AttributeError or KeyError
            except (ValueError, TypeError, AttributeError, KeyError, OSError) as exc:
                result = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            written.append((uid, result))
    return written
