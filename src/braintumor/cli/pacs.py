"""``braintumor pacs search|pull|analyze``: find studies on a PACS, fetch them, and score one as a study with its
SR and heatmap captures stored back beside it.

Why a command group over :mod:`braintumor.interop.pacs`: a result the radiologist's viewer cannot see is not used;
``analyze --push`` returns it into the PACS as DICOM of the same study (same patient, new series), which is what
the hospital's tools read. The commands only join parts that are tested on their own: the DICOMweb client, the
study scorer (:func:`braintumor.inference.study.score_studies`: every instance decoded by the imaging readers with
their structure checks — what comes from a PACS is untrusted — and the study-level outcome rule) and the SR / SC
writers (:mod:`braintumor.interop.dicom_out`).

Credentials never go on the command line (where ``ps`` and shell history would show them): ``--username`` (or
``BRAINTUMOR_PACS_USERNAME``) with the password from ``BRAINTUMOR_PACS_PASSWORD`` or ``--password-stdin``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from braintumor.cli.common import EnvFlag, add_model_flag, command, group
from braintumor.errors import BrainTumorError

PACS_URL = EnvFlag("BRAINTUMOR_PACS_URL", "", "the PACS's DICOMweb root")
PACS_USERNAME = EnvFlag("BRAINTUMOR_PACS_USERNAME", "", "PACS user")
PASSWORD_ENV = "BRAINTUMOR_PACS_PASSWORD"


def _client(args: argparse.Namespace) -> Any:
    """The PACS client the flags describe (the password from ``$BRAINTUMOR_PACS_PASSWORD`` or stdin)."""
    from braintumor.interop.pacs import PacsClient

    url = PACS_URL.value(args.url)
    if not url:
        raise BrainTumorError("no PACS given: pass --url URL or set BRAINTUMOR_PACS_URL")
    username = PACS_USERNAME.value(args.username) or None
    password: str | None = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    if username is None and password is not None:
        source = "--password-stdin" if args.password_stdin else PASSWORD_ENV
        raise BrainTumorError(f"a PACS password ({source}) needs a --username")
    if username is not None and not password:
        raise BrainTumorError(f"--username needs a password: set {PASSWORD_ENV} or pass --password-stdin")
    return PacsClient(url, username=username, password=password, timeout=args.timeout)


def _cmd_search(args: argparse.Namespace) -> int:
    """find studies on the PACS (QIDO-RS): one line per study

    Search the PACS for studies matching every filter given (DICOM matching: * wildcards in names, YYYYMMDD-YYYYMMDD
    date ranges). Text: one tab-separated line per study (study UID, patient ID, patient name, date, accession
    number, modalities, series, instances, description); --format json: one JSON object per line.
    """
    studies = _client(args).search_studies(
        patient_id=args.patient_id,
        patient_name=args.patient_name,
        accession_number=args.accession,
        study_date=args.date,
        modality=args.modality,
        limit=args.limit,
    )
    for s in studies:
        if args.format == "json":
            print(json.dumps(dataclasses.asdict(s)))
        else:
            counts = ["" if n is None else str(n) for n in (s.series, s.instances)]
            fields = [s.study_uid, s.patient_id, s.patient_name, s.study_date, s.accession_number,
                      "\\".join(s.modalities), *counts, s.description]  # fmt: skip
            print("\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields))
    if not studies:
        print("no study matched", file=sys.stderr)
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    """download a study from the PACS (WADO-RS) into a folder

    Retrieve every instance of the study into DIR as <SOP Instance UID>.dcm, one instance at a time.
    """
    paths = _client(args).pull_study(args.study, args.out)
    print(f"pulled {len(paths)} instance(s) of study {args.study} into {args.out}")
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    """score a PACS study as a study; write (and with --push store back) its SR + heatmap captures

    Retrieve the study (WADO-RS), score its selected series slice by slice with the study rule (see 'braintumor
    predict --studies'), write a Comprehensive SR and one Secondary Capture of the heatmap per scored slice into
    --out, and with --push store them into the same study on the PACS (STOW-RS). Patient and study attributes come
    from the PACS's own instances. Prints one line: the study outcome, the slices scored, the files written and
    pushed. Decision support, not a diagnosis.
    """
    if args.out is None and not args.push:
        raise BrainTumorError("nothing would be kept: give --out DIR, --push, or both")
    pacs = _client(args)
    from braintumor.interop.pacs import encoded_instances

    retrieved = encoded_instances(pacs.retrieve_study(args.study))  # the datasets go: the bytes are what is scored
    for reason in retrieved.unreadable:
        print(f"study {args.study}: not scored: {reason}", file=sys.stderr)
    sources, passed_over = list(retrieved.files), retrieved.passed_over
    if not sources:
        raise BrainTumorError(f"study {args.study} has no image instances to score")
    if args.out is not None:
        return _analyze(args, pacs, sources, passed_over, args.out)
    with tempfile.TemporaryDirectory(prefix="braintumor-pacs-") as tmp:
        return _analyze(args, pacs, sources, passed_over, Path(tmp))


def _analyze(args: argparse.Namespace, pacs: Any, sources: list[tuple[str, bytes]], passed_over: int,
             out_dir: Path) -> int:  # fmt: skip
    import pydicom

    from braintumor.inference.bundled import resolve_model_dir
    from braintumor.inference.predictor import Predictor
    from braintumor.inference.study import score_studies
    from braintumor.interop.dicom_out import write_dicom_results
    from braintumor.interop.study_out import SliceCollector, finding_of

    keep = SliceCollector(read=dict(sources).__getitem__)

    model_dir = resolve_model_dir(args.model or os.environ.get("BRAINTUMOR_MODEL_DIR") or None)
    predictor = Predictor.load(model_dir, threads=args.threads)
    run = score_studies(predictor, sources, cam=True, on_slice=keep, batch_size=args.batch_size)
    for problem in run.problems:
        print(f"instance {problem.source}: not scored: {problem.reason}", file=sys.stderr)
    if not run.studies:
        raise BrainTumorError(f"study {args.study}: none of its {len(sources)} image instance(s) could be read")
    studies = [s for s in run.studies if s.study_uid == args.study] or run.studies
    if len(studies) != 1:
        raise BrainTumorError(f"study {args.study}: the PACS sent instances of {len(run.studies)} studies")
    study = studies[0]
    for skipped in study.skipped:
        print(f"skipped series {skipped.series.description or skipped.series.series_uid}: {skipped.reason}",
              file=sys.stderr)  # fmt: skip
    slices = [s for _, s in study.slices]
    scored = f"{sum(s.status == 'ok' for s in slices)} of {len(slices)} slice(s) scored in {len(study.series)} series"
    other = f", {passed_over} non-image instance(s) passed over" if passed_over else ""
    analysed = [a for series in study.series for a in keep.by_series.get(series.series.series_uid, [])]
    if study.outcome is None or not analysed:
        print(f"study {args.study}: not assessable ({study.reason}); {scored}{other}; nothing written")
        return 1
    try:
        written = write_dicom_results(analysed, out_dir, finding=finding_of(study.outcome, analysed))
    except ValueError as exc:
        raise BrainTumorError(f"cannot write the DICOM results: {str(exc).splitlines()[0]}") from None
    files = [written.sr, *written.captures]
    kept = f" to {out_dir}" if args.out is not None else ""
    line = (f"study {args.study}: {study.outcome} ({study.reason}); {scored}{other}; "
            f"wrote SR + {len(written.captures)} SC{kept}")  # fmt: skip
    failed: tuple[tuple[str, int], ...] = ()
    if args.push:
        result = pacs.store([pydicom.dcmread(p) for p in files])
        failed = result.failed
        line += f"; pushed {len(result.stored)} of {len(files)} to the PACS"
    print(line)
    for uid, reason in failed:
        print(f"the PACS refused instance {uid} (failure reason {reason})", file=sys.stderr)
    return 1 if failed else 0


def _pacs_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the PACS's DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web "
                        "(default: BRAINTUMOR_PACS_URL)")  # fmt: skip
    parser.add_argument("--username", help="PACS user, HTTP basic auth (default: BRAINTUMOR_PACS_USERNAME, else none)")
    parser.add_argument("--password-stdin", action="store_true",
                        help=f"read the password from the first line of stdin (else {PASSWORD_ENV})")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")


def add_parser(sub: Any) -> None:
    pacs = group(sub, "pacs", "search, pull and analyse studies on a PACS over DICOMweb",
                 "The PACS's DICOMweb root comes from --url or BRAINTUMOR_PACS_URL; credentials from --username "
                 f"and {PASSWORD_ENV} or --password-stdin, never the command line.")  # fmt: skip

    s = command(pacs, "search", _cmd_search)
    _pacs_flags(s)
    s.add_argument("--patient-id", metavar="ID")
    s.add_argument("--patient-name", metavar="NAME", help="DICOM name match (* wildcards)")
    s.add_argument("--accession", metavar="NUMBER")
    s.add_argument("--date", metavar="YYYYMMDD[-YYYYMMDD]")
    s.add_argument("--modality", metavar="MOD", help="a modality in the study, e.g. MR")
    s.add_argument("--limit", type=int, default=100, help="at most this many studies (default 100)")
    s.add_argument("--format", choices=("text", "json"), default="text")

    p = command(pacs, "pull", _cmd_pull)
    _pacs_flags(p)
    p.add_argument("--study", required=True, metavar="UID", help="Study Instance UID")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")

    a = command(pacs, "analyze", _cmd_analyze)
    _pacs_flags(a)
    a.add_argument("--study", required=True, metavar="UID", help="Study Instance UID")
    a.add_argument("--out", type=Path, metavar="DIR", help="write the SR and captures here (default: not kept)")
    a.add_argument("--push", action="store_true", help="store the SR and captures into the study on the PACS")
    add_model_flag(a)
    a.add_argument("--batch-size", type=int, default=16)
    a.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all cores)")
