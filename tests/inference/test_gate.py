"""The input gate: real MRI slices pass, cats, documents, noise, blanks and CTs are rejected with a reason.

The smoke model is randomly initialised, so its features are weak: feature-space assertions here are limited to
what holds for any feature extractor (training images look like training images, a vector far off the training
subspace does not). The real measurement, with a trained model and a non-MRI corpus, is ``bench/gate.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from braintumor.data.datasets import discover
from braintumor.data.splits import SplitRow, write_split
from braintumor.errors import BrainTumorError, NotAnMRIError, OutOfScopeError
from braintumor.imaging.io import load_image
from braintumor.imaging.types import ImageMeta, LoadedImage
from braintumor.inference.gate import InputGate, image_statistics
from braintumor.inference.gate_fit import extract_features, fit_gate
from braintumor.inference.predictor import Prediction, Predictor, Rejection
from braintumor.models.export_dir import GATE_FILE

DATASETS = ("brain_tumor_dataset", "br35h", "brain_tumor_mri_4class")
FIT_PER_DATASET, VAL_PER_DATASET, HELD_PER_DATASET = 30, 10, 6


def _png(pixels: np.ndarray | Image.Image) -> LoadedImage:
    import io

    im = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return load_image(buf.getvalue())


@pytest.fixture(scope="module")
def split_parts(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A small split CSV over the three datasets (evenly spaced files): train, val, and held-out test rows."""
    rows = []
    for ds in DATASETS:
        records = discover(shared_data / ds)
        n = FIT_PER_DATASET + VAL_PER_DATASET + HELD_PER_DATASET
        picked = [records[int(i)] for i in np.linspace(0, len(records) - 1, n)]
        order = np.random.default_rng(0).permutation(n)  # mix classes across the parts
        for rank, k in enumerate(order):
            part = "train" if rank < FIT_PER_DATASET else "val" if rank < n - HELD_PER_DATASET else "test"
            r = picked[int(k)]
            rows.append(SplitRow(r.key, r.dataset, r.relative_path, r.label, len(rows), part, None))
    path = tmp_path_factory.mktemp("gate") / "split.csv"
    write_split(rows, path)
    held = [shared_data / r.dataset / r.relative_path for r in rows if r.split == "test"]
    return path, held


@pytest.fixture(scope="module")
def gate_file(smoke_export: Path, shared_data: Path, split_parts: tuple[Path, list[Path]]) -> Path:
    split, _ = split_parts
    out = split.parent / GATE_FILE
    fit_gate(smoke_export, [shared_data / d for d in DATASETS], split, out, threads=1)
    return out


@pytest.fixture(scope="module")
def gate(gate_file: Path) -> InputGate:
    return InputGate.load(gate_file)


@pytest.fixture(scope="module")
def held_out(split_parts: tuple[Path, list[Path]]) -> list[LoadedImage]:
    return [load_image(p) for p in split_parts[1]]


def cat() -> LoadedImage:
    from skimage.data import chelsea

    return _png(chelsea())


def document() -> LoadedImage:
    import matplotlib

    font_path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    font = ImageFont.truetype(str(font_path), 18)
    page = Image.new("L", (850, 1100), 250)
    draw = ImageDraw.Draw(page)
    for line in range(40):
        draw.text((60, 60 + 24 * line), f"Line {line}: the quarterly report shows revenue grew by {line}%", font=font)
    return _png(page)


def noise() -> LoadedImage:
    return _png(np.random.default_rng(0).normal(128, 50, (256, 256)).clip(0, 255).astype(np.uint8))


def blank() -> LoadedImage:
    return _png(np.zeros((256, 256), np.uint8))


def ct_dicom() -> LoadedImage:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")  # bundled with pydicom: no download
    assert isinstance(path, str)
    return load_image(path)


def test_real_mri_slices_pass_the_image_checks(gate: InputGate, held_out: list[LoadedImage]) -> None:
    assert len(held_out) == 3 * HELD_PER_DATASET
    assert [gate.check_image(im) for im in held_out] == [None] * len(held_out)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (cat, "colour image"),
        (document, ""),
        (noise, "noise-like"),
        (blank, "blank"),
        (ct_dicom, "DICOM modality CT: expected MR"),
    ],
    ids=["cat", "document", "noise", "blank", "CT_small.dcm"],
)
def test_non_mri_inputs_are_rejected_with_a_one_line_reason(gate: InputGate, make: object, expected: str) -> None:
    assert callable(make)
    reason = gate.check_image(make())
    assert isinstance(reason, str) and reason and "\n" not in reason
    assert expected in reason


def test_dicom_modality_decides_before_the_pixels(gate: InputGate, held_out: list[LoadedImage]) -> None:
    pixels = held_out[0].pixels
    size = (pixels.shape[1], pixels.shape[0])
    as_mr = LoadedImage(pixels, ImageMeta("dicom", size, "MONOCHROME2", 16, modality="MR"))
    as_ct = LoadedImage(pixels, ImageMeta("dicom", size, "MONOCHROME2", 16, modality="CT"))
    assert gate.check_image(as_mr) is None
    assert gate.check_image(as_ct) == "DICOM modality CT: expected MR"


def test_small_and_thin_images_are_rejected(gate: InputGate) -> None:
    assert "too small" in str(gate.check_image(_png(np.full((10, 10), 128, np.uint8))))
    assert "aspect ratio" in str(gate.check_image(_png(np.tile(np.arange(50, dtype=np.uint8) * 5, (1000, 1)))))


def test_statistics_separate_gray_mri_from_colour_and_noise(held_out: list[LoadedImage]) -> None:
    mri = image_statistics(held_out[0])
    cat_stats, noise_stats = image_statistics(cat()), image_statistics(noise())
    assert mri["colourfulness"] < 30 < cat_stats["colourfulness"]
    assert noise_stats["smoothness"] < 0.2 < mri["smoothness"]


def _sample_statistics(image: LoadedImage) -> dict[str, float]:
    """The definitions of the sample-based statistics, straight from the 256×256 nearest-neighbour sample: what
    the gate was fitted with, whatever shortcut ``image_statistics`` takes to compute them."""
    gray = image.pixels if image.pixels.ndim == 2 else np.asarray(Image.fromarray(image.pixels).convert("L"))
    sample = np.asarray(Image.fromarray(gray).resize((256, 256), Image.Resampling.NEAREST))
    hist = np.bincount((sample // 8).ravel(), minlength=32).astype(np.float64) / sample.size
    tones = hist[2:]
    p = tones[tones > 0] / tones.sum() if tones.sum() > 0 else np.ones(1)
    return {"contrast": float(sample.std() / 255), "flat_share": float(hist.max()),
            "tonal_entropy": float(-(p * np.log2(p)).sum())}  # fmt: skip


def test_sample_statistics_keep_their_definitions(held_out: list[LoadedImage]) -> None:
    for image in [*held_out, cat(), document(), noise(), blank()]:
        stats, want = image_statistics(image), _sample_statistics(image)
        for name, value in want.items():
            assert stats[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name


def test_feature_check_accepts_training_images_and_rejects_far_off_features(
    gate: InputGate, smoke_export: Path, held_out: list[LoadedImage]
) -> None:
    features = extract_features(smoke_export, held_out, threads=1)
    reasons = gate.check_features(features)
    assert len(reasons) == len(held_out)
    assert all(r is None or r.startswith("unlike the brain MRI slices the model was validated on") for r in reasons)
    # A one-hot vector along the feature the prototypes use least points away from every training MRI.
    far = np.zeros((1, features.shape[1]), np.float32)
    far[0, int(np.argmin(np.abs(gate.model.prototypes).max(axis=0)))] = 1.0
    (reason,) = gate.check_features(far)
    assert reason is not None and "× the training range" in reason
    assert gate.feature_scores(far)[0] > 1.0


def test_feature_dimension_mismatch_is_a_clear_error(gate: InputGate) -> None:
    with pytest.raises(BrainTumorError, match="refit the gate"):
        gate.check_features(np.zeros((1, 7), np.float32))


def test_save_load_round_trip(gate: InputGate, tmp_path: Path) -> None:
    path = gate.save(tmp_path / "copy.npz")
    again = InputGate.load(path)
    assert again.params == gate.params
    probe = np.random.default_rng(0).random((3, gate.model.dim))
    assert again.check_features(probe) == gate.check_features(probe)
    np.testing.assert_allclose(again.feature_scores(probe), gate.feature_scores(probe))
    assert again.summary()["format"] == "braintumor-gate-v1"
    (tmp_path / "bad.npz").write_bytes(b"not a gate")
    (tmp_path / "truncated.npz").write_bytes(path.read_bytes()[:300])
    for broken in ("bad.npz", "truncated.npz", "missing.npz"):
        with pytest.raises(BrainTumorError, match="cannot read the input gate"):
            InputGate.load(tmp_path / broken)


def test_fit_records_thresholds_and_provenance(gate: InputGate, split_parts: tuple[Path, list[Path]]) -> None:
    p = gate.params
    assert set(p["image"]["bounds"]) >= {"colourfulness", "contrast", "smoothness", "dark_share"}
    assert p["features"]["calibration"] == f"{VAL_PER_DATASET * len(DATASETS)} validation images"
    assert p["source"]["arch"] == "mobilenet_v3_small" and p["source"]["n_train"] == p["n_fit"]
    json.dumps(p)


def test_refit_replaces_a_stale_gate_file(
    smoke_export: Path, shared_data: Path, split_parts: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    export = tmp_path / "export"
    shutil.copytree(smoke_export, export)
    (export / GATE_FILE).write_bytes(b"an old, broken gate")
    with pytest.raises(BrainTumorError, match="cannot read the input gate"):
        Predictor.load(export)
    fit_gate(export, [shared_data / d for d in DATASETS], split_parts[0], export / GATE_FILE, max_images=12)
    refitted = Predictor.load(export, threads=1).gate
    assert isinstance(refitted, InputGate) and refitted.params["n_fit"] == 12
    assert refitted.params["features"]["calibration"] == "out-of-fold scores of 12 training images"


@pytest.fixture(scope="module")
def gated_export(smoke_export: Path, gate_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke export with ``gate.npz`` beside its ``card.json``."""
    folder = tmp_path_factory.mktemp("gated") / "smoke"
    shutil.copytree(smoke_export, folder)
    shutil.copy(gate_file, folder / GATE_FILE)
    return folder


def test_predictor_rejects_a_cat_in_a_batch_and_raises_for_one(gated_export: Path, tiny_dataset: Path) -> None:
    predictor = Predictor.load(gated_export, threads=1)
    assert predictor.gate is not None and predictor.card_summary()["gate"] is True
    results = predictor.predict_batch([cat(), noise()], cam=False)
    assert all(isinstance(r, Rejection) and r.reason for r in results)
    assert isinstance(results[0], Rejection) and "colour image" in results[0].reason
    with pytest.raises(NotAnMRIError, match="colour image"):
        predictor.predict(cat())
    with pytest.raises(NotAnMRIError, match="DICOM modality CT"):
        predictor.predict(ct_dicom())


def test_predictor_with_gate_still_classifies_mri(gated_export: Path, held_out: list[LoadedImage]) -> None:
    predictor = Predictor.load(gated_export, threads=1)
    results = predictor.predict_batch([*held_out[:6], cat()], cam=False)
    assert isinstance(results[-1], Rejection)
    # Statistics never reject these; the weak smoke features may reject one at the margin, not most of them.
    kept = [r for r in results[:-1] if isinstance(r, Prediction)]
    assert len(kept) >= 4
    assert all(r.reason.startswith("does not look like") for r in results[:-1] if isinstance(r, Rejection))


def test_ensemble_json_names_the_gate(smoke_export: Path, gate_file: Path, tmp_path: Path) -> None:
    root = tmp_path / "ens"
    shutil.copytree(smoke_export, root / "a")
    shutil.copy(gate_file, root / "input_gate.npz")
    (root / "ensemble.json").write_text(
        json.dumps({"name": "e", "members": [{"name": "a", "path": "a"}], "gate": "input_gate.npz"})
    )
    predictor = Predictor.load(root, threads=1)
    assert isinstance(predictor.predict_batch([blank()])[0], Rejection)


def test_export_without_gate_has_none(smoke_export: Path) -> None:
    assert not (smoke_export / GATE_FILE).exists()
    assert Predictor.load(smoke_export, threads=1).gate is None


def test_gate_never_imports_torch(gate_file: Path) -> None:
    source = (Path(__file__).resolve().parents[2] / "src" / "braintumor" / "inference" / "gate.py").read_text()
    assert "import torch" not in source and "from torch" not in source
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from braintumor.inference.gate import InputGate\n"
        "from braintumor.imaging.io import load_image\n"
        f"gate = InputGate.load({str(gate_file)!r})\n"
        "from pydicom.data import get_testdata_file\n"
        "assert gate.check_image(load_image(get_testdata_file('CT_small.dcm')))\n"
        "gate.check_features(np.ones((2, gate.model.dim), np.float32))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the kinds of refusal (issue 14 item 8) ------------------------------------------------------------------
def test_unusual_mri_is_out_of_scope_not_a_non_mri(bundled: Predictor, shared_data: Path) -> None:
    """pydicom's MR_small.dcm (a genuine 64×64 MR crop) and a tiny crop of a real slice are refused as outside the
    validated images; a colour photo and a CT as not an MRI: three statuses apart, each with its reason."""
    from pydicom.data import get_testdata_file

    mr_small = load_image(get_testdata_file("MR_small.dcm"))
    with Image.open(shared_data / "brain_tumor_dataset" / "yes" / "Y1.jpg") as im:
        crop = _png(im.convert("L").resize((24, 24)))
    results = bundled.predict_batch([mr_small, crop, cat(), ct_dicom()])
    assert all(isinstance(r, Rejection) for r in results)
    kinds = [r.kind for r in results if isinstance(r, Rejection)]
    reasons = [r.reason for r in results if isinstance(r, Rejection)]
    assert kinds == ["out_of_scope", "out_of_scope", "not_mri", "not_mri"], reasons
    assert reasons[0].startswith("an MR image") and "validated on" in reasons[0]
    assert "too small (24×24 px" in reasons[1] and "validated on" in reasons[1]
    assert "colour image" in reasons[2] and reasons[3] == "DICOM modality CT: expected MR"
    with pytest.raises(OutOfScopeError):
        bundled.predict(mr_small)
    with pytest.raises(NotAnMRIError) as refused:
        bundled.predict(cat())
    assert not isinstance(refused.value, OutOfScopeError)
