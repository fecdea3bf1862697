"""Dataset discovery: supported layouts, records, the seed's shuffled loader, the real datasets' counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from braintumor.data.datasets import (
    ImageRecord,
    class_counts,
    discover,
    discover_many,
    is_image_file,
    is_tumor_label,
    load_seed_layout,
)
from braintumor.errors import DatasetError

TINY_PNG_SIZE = (8, 8)


@pytest.fixture
def touch_image(write_image: Callable[..., Path]) -> Callable[[Path], Path]:
    """Write a tiny real PNG at ``path`` (whatever its suffix): discovery never decodes, but keep it honest."""
    import numpy as np

    def make(path: Path) -> Path:
        return write_image(path, np.full(TINY_PNG_SIZE, 77, np.uint8), "PNG")

    return make


def make_layout(root: Path, files: list[str], touch: Callable[[Path], Path]) -> Path:
    for rel in files:
        touch(root / rel)
    return root


def rels(records: list[ImageRecord]) -> list[str]:
    return [r.relative_path for r in records]


def test_yes_no_layout(tmp_path: Path, touch_image: Callable[[Path], Path]) -> None:
    root = make_layout(tmp_path / "seed", ["yes/Y1.jpg", "yes/Y2.JPG", "no/1 no.jpeg", "no/N5.Jpeg"], touch_image)

    records = discover(root)

    assert rels(records) == ["no/1 no.jpeg", "no/N5.Jpeg", "yes/Y1.jpg", "yes/Y2.JPG"]  # sorted by path
    assert {r.dataset for r in records} == {"seed"}
    assert all(r.split is None for r in records)
    assert class_counts(records) == {"no": 2, "yes": 2}
    assert [r.is_tumor for r in records] == [False, False, True, True]
    assert records[2].key == "seed/yes/Y1.jpg"
    assert records[2].path == root / "yes" / "Y1.jpg"


def test_class_folder_layout(tmp_path: Path, touch_image: Callable[[Path], Path]) -> None:
    root = make_layout(
        tmp_path / "four",
        ["glioma/a.png", "meningioma/b.PNG", "notumor/c.bmp", "pituitary/d.tif", "pituitary/e.TIFF", "glioma/f.dcm"],
        touch_image,
    )

    records = discover(root, dataset="renamed")

    assert class_counts(records) == {"glioma": 2, "meningioma": 1, "notumor": 1, "pituitary": 2}
    assert {r.dataset for r in records} == {"renamed"}
    assert {r.label: r.is_tumor for r in records} == {
        "glioma": True,
        "meningioma": True,
        "notumor": False,
        "pituitary": True,
    }
    assert next(r for r in records if r.label == "meningioma").key == "renamed/meningioma/b.PNG"


def test_split_layout(tmp_path: Path, touch_image: Callable[[Path], Path]) -> None:
    root = make_layout(
        tmp_path / "mri",
        [
            "Training/glioma/Tr-gl_1.jpg",
            "Training/notumor/Tr-no_1.jpg",
            "Testing/glioma/Te-gl_1.jpg",
            "Validation/notumor/Va-no_1.jpg",
        ],
        touch_image,
    )

    records = discover(root)

    by_rel = {r.relative_path: r for r in records}
    assert set(by_rel) == {
        "Training/glioma/Tr-gl_1.jpg",
        "Training/notumor/Tr-no_1.jpg",
        "Testing/glioma/Te-gl_1.jpg",
        "Validation/notumor/Va-no_1.jpg",
    }
    assert by_rel["Training/glioma/Tr-gl_1.jpg"].split == "train"
    assert by_rel["Testing/glioma/Te-gl_1.jpg"].split == "test"
    assert by_rel["Validation/notumor/Va-no_1.jpg"].split == "val"
    assert by_rel["Testing/glioma/Te-gl_1.jpg"].label == "glioma"
    assert by_rel["Testing/glioma/Te-gl_1.jpg"].key == "mri/Testing/glioma/Te-gl_1.jpg"


@pytest.mark.parametrize(
    ("folder", "split"), [("train", "train"), ("TRAINING", "train"), ("valid", "val"), ("test", "test")]
)
def test_split_folder_aliases(folder: str, split: str, tmp_path: Path, touch_image: Callable[[Path], Path]) -> None:
    root = make_layout(tmp_path / "ds", [f"{folder}/yes/a.jpg"], touch_image)
    [record] = discover(root)
    assert record.split == split
    assert record.relative_path == f"{folder}/yes/a.jpg"


def test_hidden_and_non_image_files_are_ignored(tmp_path: Path, touch_image: Callable[[Path], Path]) -> None:
    root = make_layout(tmp_path / "ds", ["yes/a.jpg", "no/b.png"], touch_image)
    (root / "yes" / ".hidden.jpg").write_bytes(b"x")
    (root / "yes" / "._a.jpg").write_bytes(b"x")  # macOS resource fork
    (root / "yes" / ".DS_Store").write_bytes(b"x")
    (root / "yes" / "notes.txt").write_text("not an image")
    (root / "yes" / "archive.zip").write_bytes(b"PK")
    (root / "yes" / "noext").write_bytes(b"x")
    (root / "no" / "subdir.jpg").mkdir()  # a folder with an image-like name
    (root / "README.md").write_text("top-level files are not classes")
    (root / "MANIFEST.csv").write_text("relative_path\n")
    touch_image(root / ".cache" / "c.jpg")  # hidden class folder

    records = discover(root)

    assert rels(records) == ["no/b.png", "yes/a.jpg"]


def test_hidden_folders_inside_split_folders_are_ignored(tmp_path: Path, touch_image: Callable[[Path], Path]) -> None:
    root = make_layout(tmp_path / "ds", ["Training/glioma/a.jpg", "Testing/glioma/b.jpg"], touch_image)
    touch_image(root / "Training" / ".ipynb_checkpoints" / "a-checkpoint.jpg")
    touch_image(root / ".Trash" / "glioma" / "z.jpg")

    records = discover(root)

    assert rels(records) == ["Testing/glioma/b.jpg", "Training/glioma/a.jpg"]
    assert {r.label for r in records} == {"glioma"}


def test_is_image_file(tmp_path: Path) -> None:
    for name in ("a.jpg", "a.JPG", "a.Jpeg", "a.PNG", "a.bmp", "a.tif", "a.tiff", "a.dcm", "a.DICOM"):
        (tmp_path / name).write_bytes(b"x")
        assert is_image_file(tmp_path / name), name
    for name in ("a.txt", "a.gif", ".a.jpg", "jpg"):
        (tmp_path / name).write_bytes(b"x")
        assert not is_image_file(tmp_path / name), name
    assert not is_image_file(tmp_path / "missing.jpg")


def test_empty_folder_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no labelled images"):
        discover(tmp_path)
    (tmp_path / "yes").mkdir()
    (tmp_path / "no").mkdir()
    (tmp_path / "no" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError):
        discover(tmp_path)


def test_missing_folder_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a folder"):
        discover(tmp_path / "missing")
    file = tmp_path / "file.jpg"
    file.write_bytes(b"x")
    with pytest.raises(DatasetError, match="not a folder"):
        discover(file)


def test_discover_many_requires_distinct_names(tmp_path: Path, touch_image: Callable[[Path], Path]) -> None:
    a = make_layout(tmp_path / "a" / "data", ["yes/1.jpg"], touch_image)
    b = make_layout(tmp_path / "b" / "data", ["no/2.jpg"], touch_image)
    c = make_layout(tmp_path / "c", ["no/3.jpg", "yes/4.jpg"], touch_image)
    with pytest.raises(DatasetError, match="data"):
        discover_many([a, b])
    records = discover_many([a, c])
    assert [r.key for r in records] == ["data/yes/1.jpg", "c/no/3.jpg", "c/yes/4.jpg"]


@pytest.mark.parametrize(
    ("label", "tumor"),
    [
        ("yes", True),
        ("no", False),
        ("notumor", False),
        ("No", False),
        (" NOTUMOR ", False),
        ("no_tumor", False),
        ("normal", False),
        ("glioma", True),
        ("meningioma", True),
        ("pituitary", True),
        ("tumor", True),
    ],
)
def test_is_tumor(label: str, tumor: bool) -> None:
    assert is_tumor_label(label) is tumor
    assert ImageRecord(Path("/x") / label / "a.jpg", label, "ds").is_tumor is tumor


def test_record_paths() -> None:
    plain = ImageRecord(Path("/data/seed/yes/Y1.jpg"), "yes", "seed")
    assert plain.relative_path == "yes/Y1.jpg"
    assert plain.key == "seed/yes/Y1.jpg"
    split = ImageRecord(Path("/data/mri/Testing/glioma/Te-gl_1.jpg"), "glioma", "mri", "test")
    assert split.relative_path == "Testing/glioma/Te-gl_1.jpg"
    assert split.key == "mri/Testing/glioma/Te-gl_1.jpg"


def test_load_seed_layout_is_seeded(tmp_path: Path, touch_image: Callable[[Path], Path]) -> None:
    files = [f"yes/Y{i}.jpg" for i in range(15)] + [f"no/N{i}.jpg" for i in range(10)]
    root = make_layout(tmp_path / "seed", files, touch_image)

    first = load_seed_layout(root, seed=42)
    again = load_seed_layout(root, seed=42)
    other = load_seed_layout(root, seed=7)

    assert rels(first) == rels(again)
    assert rels(first) != rels(other)
    assert sorted(rels(first)) == sorted(rels(other)) == sorted(files)
    assert rels(first) != sorted(files), "the seed's loader shuffles"


def test_load_seed_layout_needs_yes_no(tmp_path: Path, touch_image: Callable[[Path], Path]) -> None:
    root = make_layout(tmp_path / "four", ["glioma/a.jpg", "notumor/b.jpg"], touch_image)
    with pytest.raises(DatasetError, match="yes/ or no/"):
        load_seed_layout(root)
    mixed = make_layout(tmp_path / "mixed", ["YES/a.jpg", "glioma/b.jpg", "no/c.jpg"], touch_image)
    assert sorted(rels(load_seed_layout(mixed))) == ["YES/a.jpg", "no/c.jpg"]


# -- the real datasets -----------------------------------------------------------------------------------

SPLIT_OF_MANIFEST = {"": None, "Training": "train", "Testing": "test"}


@pytest.mark.parametrize(
    ("name", "total"), [("brain_tumor_dataset", 253), ("br35h", 1962), ("brain_tumor_mri_4class", 5665)]
)
def test_real_datasets_match_their_manifests(
    name: str, total: int, shared_data: Path, manifest: Callable[[str], list[dict[str, str]]]
) -> None:
    rows = manifest(name)
    records = discover(shared_data / name)

    assert len(records) == len(rows) == total
    assert {r.relative_path for r in records} == {row["relative_path"] for row in rows}
    assert class_counts(records) == dict(sorted(Counter(row["class"] for row in rows).items()))
    split_by_rel = {row["relative_path"]: SPLIT_OF_MANIFEST[row["split"]] for row in rows}
    assert {r.relative_path: r.split for r in records} == split_by_rel
    assert all(r.dataset == name for r in records)
    assert len({r.key for r in records}) == total


def test_real_seed_dataset_counts(shared_data: Path) -> None:
    records = discover(shared_data / "brain_tumor_dataset")
    assert class_counts(records) == {"no": 98, "yes": 155}
    assert sum(r.is_tumor for r in records) == 155
    shuffled = load_seed_layout(shared_data / "brain_tumor_dataset")
    assert sorted(r.key for r in shuffled) == sorted(r.key for r in records)


def test_real_four_class_splits(shared_data: Path) -> None:
    records = discover(shared_data / "brain_tumor_mri_4class")
    assert {r.split for r in records} == {"train", "test"}
    assert {r.label for r in records} == {"glioma", "meningioma", "notumor", "pituitary"}
