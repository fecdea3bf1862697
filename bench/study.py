"""A 150-slice MR series scored end to end with the bundled model, two ways: (1) files on disk -> series -> per-slice
results with heatmaps written -> study outcome (the CLI's path); (2) through the API: one zip POSTed to /studies ->
unzipped, de-identified and decoded in the isolated child, scored, every slice's view and overlay rendered, the
record and its files stored (embedded backend) -> 201. Goal (issue 15): <= 10 s on 2 cores. Writes
bench/results-study.md.

The series is synthetic, built from 150 real Br35H slices (``../shared/data``, resized to 256x256, wrapped as MR
instances with geometry, written in shuffled order to a temporary folder): no real multi-slice study ships offline.

    .venv/bin/python bench/study.py [--slices 150] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dicom_files import mr_series  # noqa: E402
from tests.studies import gray_slices, write  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()

    from braintumor.cli.inference import _heatmap_writer
    from braintumor.inference.bundled import bundled_model_dir
    from braintumor.inference.predictor import Predictor
    from braintumor.inference.study import score_studies

    files = sorted((args.data / "br35h" / "yes").iterdir())[: args.slices // 2]
    files += sorted((args.data / "br35h" / "no").iterdir())[: args.slices - len(files)]
    pixels = gray_slices(files, 256)
    model = bundled_model_dir()
    assert model is not None, "no bundled model"
    predictor = Predictor.load(model, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write(mr_series(pixels), Path(tmp) / "series")
        cams = Path(tmp) / "cams"
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            run = score_studies(predictor, paths, cam=True, on_slice=_heatmap_writer(cams))
            timings.append(time.perf_counter() - start)
        study = run.studies[0]
        slices = [s for _, s in study.slices]
    best, worst = min(timings), max(timings)
    ok = sum(s.status == "ok" for s in slices)
    api_best, api_worst, api_body = _through_the_api(mr_series(pixels), model, args.threads)
    text = (
        "# A 150-slice series end to end (issue 15)\n\n"
        f"`python bench/study.py --slices {args.slices} --threads {args.threads}` on {os.cpu_count()} cores: "
        f"{len(slices)} DICOM files (256x256, real Br35H slices wrapped as one MR series, shuffled on disk) read, "
        "grouped, ordered, decoded through the single-image reader, scored by the bundled model in batches of 16 "
        "with the input gate and Grad-CAM, one heatmap PNG written per assessed slice, study outcome by the rule.\n\n"
        "| slices | assessed | best of 3 | worst of 3 | per slice | goal |\n|---|---|---|---|---|---|\n"
        f"| {len(slices)} | {ok} | {best:.2f} s | {worst:.2f} s | {1000 * best / len(slices):.1f} ms | <= 10 s |\n\n"
        f"Study outcome on this synthetic mix (half tumor slices): {study.outcome} ({study.reason}).\n\n"
        "## Through the API: upload -> stored results\n\n"
        "The same series as one zip POSTed to `/studies` of an in-process app (embedded storage in a temporary "
        "folder, isolated decoding on, the bundled model): unzip, de-identify every instance, read and order, decode "
        "in the isolated child; score with gate and Grad-CAM; render each slice's view and overlay PNG; store the "
        "record, its 300 PNGs and 150 cleaned instances atomically; answer 201 with every slice.\n\n"
        "| slices | assessed | best of 3 | worst of 3 | per slice | goal |\n|---|---|---|---|---|---|\n"
        f"| {len(api_body['slices'])} | {sum(x['status'] == 'ok' for x in api_body['slices'])} | {api_best:.2f} s "
        f"| {api_worst:.2f} s | {1000 * api_best / len(api_body['slices']):.1f} ms | <= 10 s |\n\n"
        f"Study outcome: {api_body['outcome']} ({api_body['reason']}).\n"
    )
    (ROOT / "bench" / "results-study.md").write_text(text)
    print(text)


def _through_the_api(datasets: list[object], model: Path, threads: int) -> tuple[float, float, dict[str, object]]:
    import io
    import secrets
    import zipfile

    from fastapi.testclient import TestClient

    from braintumor.api import Settings, create_app

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i, ds in enumerate(datasets):
            one = io.BytesIO()
            ds.save_as(one, enforce_file_format=True)  # type: ignore[attr-defined]
            z.writestr(f"series/IM{i:04d}.dcm", one.getvalue())
    zipped = buf.getvalue()
    timings, body = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(secret_key=secrets.token_urlsafe(48), data_dir=Path(tmp), model_dir=model,
                            inference_threads=threads, argon2_time_cost=1, argon2_memory_kib=1024,
                            argon2_parallelism=1)  # fmt: skip
        with TestClient(create_app(settings)) as client:
            password = "correct-horse-battery-staple"
            client.post("/register", json={"username": "bench", "password": password})
            token = client.post("/token", data={"username": "bench", "password": password}).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            for _ in range(3):
                start = time.perf_counter()
                r = client.post("/studies", headers=headers, files=[("files", ("series.zip", zipped))])
                timings.append(time.perf_counter() - start)
                assert r.status_code == 201, r.text
                body = r.json()
    return min(timings), max(timings), body


if __name__ == "__main__":
    main()
