"""Image I/O: formats decided by content, metadata, DICOM display pipeline, typed errors."""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from braintumor.errors import (
    BrainTumorError,
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    NoPixelDataError,
    UnsupportedImageError,
)
from braintumor.imaging.dicom_tags import DESCRIPTIVE_TAGS, IDENTIFYING_TAGS
from braintumor.imaging.io import describe, load_image, sniff_format
from braintumor.imaging.types import DEFAULT_MAX_PIXELS

from ..dicom_files import MR_SMALL_ENCODINGS

# -- helpers ---------------------------------------------------------------------------------------------


def assert_one_line(exc: BaseException) -> None:
    message = str(exc)
    assert message.strip(), f"{type(exc).__name__} has an empty message"
    assert "\n" not in message and "\r" not in message, f"multi-line message: {message!r}"


def dicom_file(name: str) -> Path:
    """One of pydicom's bundled test files (only names that ship with the wheel: no download)."""
    return Path(get_testdata_file(name))


def read_dicom(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(dicom_file(name))


def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def colour_image(width: int = 48, height: int = 40) -> np.ndarray:
    """A real colour image (channels differ) with smooth gradients (JPEG-friendly)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), np.full_like(xx, 90)], axis=2).astype(np.uint8)


def patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite the IHDR's width and height and recompute its CRC (the rest of the file is unchanged)."""
    assert png[12:16] == b"IHDR"
    ihdr = bytearray(png[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return png[:16] + bytes(ihdr) + crc + png[33:]


# -- sniffing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0" + bytes(20), "jpeg"),
        (b"\x89PNG\r\n\x1a\n" + bytes(20), "png"),
        (b"BM" + bytes(30), "bmp"),
        (b"II*\x00" + bytes(20), "tiff"),
        (b"MM\x00*" + bytes(20), "tiff"),
        (bytes(128) + b"DICM" + bytes(20), "dicom"),
        (b"II*\x00" + bytes(124) + b"DICM" + bytes(8), "dicom"),  # dual-personality: DICOM wins
        (b"\x08\x00\x05\x00CS\x0a\x00", "dicom"),  # preamble-less, explicit VR little endian
        (b"\x00\x08\x00\x05CS\x00\x0a", "dicom"),  # preamble-less, big endian
        (b"GIF89a" + bytes(20), None),
        (b"%PDF-1.4\n", None),
        (b"", None),
    ],
)
def test_sniff_format(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected


# -- raster formats by content ---------------------------------------------------------------------------


def _rgba(gray: np.ndarray) -> Image.Image:
    alpha = np.zeros_like(gray)
    alpha[:, : gray.shape[1] // 2] = 255
    return Image.fromarray(np.dstack([gray, gray, gray, alpha]), mode="RGBA")


def _la(gray: np.ndarray) -> Image.Image:
    alpha = np.zeros_like(gray)
    alpha[:, : gray.shape[1] // 2] = 255
    return Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha)])


def _left_half_only(gray: np.ndarray) -> np.ndarray:
    expected = gray.copy()
    expected[:, gray.shape[1] // 2 :] = 0
    return expected


RasterCase = tuple[Callable[[np.ndarray], bytes], str, str, int, Callable[[np.ndarray], np.ndarray] | None]


def _raster_cases() -> dict[str, RasterCase]:
    """name -> (encode(gray) -> bytes, format, PIL mode, bit depth, expected pixels(gray) or None = lossy)."""

    def enc(fmt: str, transform: Callable[[np.ndarray], Image.Image | np.ndarray], **kw: object) -> Callable:
        def run(gray: np.ndarray) -> bytes:
            out = transform(gray)
            im = out if isinstance(out, Image.Image) else Image.fromarray(out)
            buf = io.BytesIO()
            im.save(buf, fmt, **kw)
            return buf.getvalue()

        return run

    same = lambda g: g  # noqa: E731
    gray3 = lambda g: np.dstack([g, g, g])  # noqa: E731
    return {
        "jpeg-gray": (enc("JPEG", same, quality=95), "jpeg", "L", 8, None),
        "png-gray": (enc("PNG", same), "png", "L", 8, same),
        "png-rgb-equal-channels": (enc("PNG", gray3), "png", "RGB", 8, same),
        "png-rgba": (enc("PNG", _rgba), "png", "RGBA", 8, _left_half_only),
        "png-la": (enc("PNG", _la), "png", "LA", 8, _left_half_only),
        "bmp-gray": (enc("BMP", same), "bmp", "L", 8, same),
        "bmp-rgb-equal-channels": (enc("BMP", gray3), "bmp", "RGB", 8, same),
        "tiff-gray": (enc("TIFF", same), "tiff", "L", 8, same),
        "tiff-rgb-equal-channels": (enc("TIFF", gray3), "tiff", "RGB", 8, same),
    }


WRONG_SUFFIX = {"jpeg": ".png", "png": ".jpg", "bmp": ".tif", "tiff": ".bmp", "dicom": ".jpeg"}


@pytest.mark.parametrize("case", sorted(_raster_cases()))
def test_gray_content_decoded_by_content_with_wrong_extension(
    case: str, brain_gray: np.ndarray, tmp_path: Path
) -> None:
    encode_fn, fmt, mode, bit_depth, expected_fn = _raster_cases()[case]
    data = encode_fn(brain_gray)
    path = tmp_path / f"image{WRONG_SUFFIX[fmt]}"
    path.write_bytes(data)

    image = load_image(path)

    height, width = brain_gray.shape
    assert image.meta.source_format == fmt
    assert image.meta.original_size == (width, height)
    assert image.meta.mode == mode
    assert image.meta.bit_depth == bit_depth
    assert image.meta.modality is None and image.meta.dicom == {}
    assert image.pixels.dtype == np.uint8
    assert image.pixels.shape == (height, width), "gray content must come back 2-D"
    assert image.is_gray
    if expected_fn is None:  # lossy
        assert np.abs(image.pixels.astype(int) - brain_gray).mean() < 2.0
    else:
        np.testing.assert_array_equal(image.pixels, expected_fn(brain_gray))
    if mode in ("RGBA", "LA"):
        assert any("alpha" in note for note in image.meta.notes)
    # bytes, bytearray and memoryview give exactly what the path gives
    for source in (data, bytearray(data), memoryview(data)):
        again = load_image(source)
        np.testing.assert_array_equal(again.pixels, image.pixels)
        assert again.meta == image.meta


@pytest.mark.parametrize(("fmt", "pil_format"), [("png", "PNG"), ("bmp", "BMP"), ("tiff", "TIFF"), ("jpeg", "JPEG")])
def test_colour_content_stays_rgb(fmt: str, pil_format: str, tmp_path: Path) -> None:
    rgb = colour_image()
    data = Image.fromarray(rgb)
    buf = io.BytesIO()
    data.save(buf, pil_format, **({"quality": 95} if fmt == "jpeg" else {}))
    path = tmp_path / f"colour{WRONG_SUFFIX[fmt]}"
    path.write_bytes(buf.getvalue())

    image = load_image(path)

    assert image.meta.source_format == fmt
    assert image.meta.mode == "RGB"
    assert image.pixels.shape == (40, 48, 3)
    assert not image.is_gray
    if fmt == "jpeg":
        assert np.abs(image.pixels.astype(int) - rgb).mean() < 3.0
    else:
        np.testing.assert_array_equal(image.pixels, rgb)
    np.testing.assert_array_equal(load_image(buf.getvalue()).pixels, image.pixels)


def test_palette_png_with_transparency(brain_gray: np.ndarray, tmp_path: Path) -> None:
    palette_image = Image.fromarray(brain_gray).quantize(colors=16)
    indices = np.asarray(palette_image)
    transparent_index = int(indices[0, 0])  # the background colour
    buf = io.BytesIO()
    palette_image.save(buf, "PNG", transparency=transparent_index)
    path = tmp_path / "palette.jpg"
    path.write_bytes(buf.getvalue())

    image = load_image(path)

    assert image.meta.source_format == "png"
    assert image.meta.mode == "P"
    assert any("palette" in note for note in image.meta.notes)
    assert any("alpha" in note for note in image.meta.notes)
    # Expected: every index through the palette, transparent ones black. Palette entries are gray here.
    rgb_palette = np.array(palette_image.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
    expected = rgb_palette[indices]
    expected[indices == transparent_index] = 0
    expected_gray = expected[..., 0] if np.all(expected == expected[..., :1]) else expected
    np.testing.assert_array_equal(image.pixels, expected_gray)
    assert image.pixels[indices == transparent_index].max() == 0
    assert image.pixels[indices != transparent_index].max() > 0


def test_palette_png_in_colour_becomes_rgb() -> None:
    rgb = colour_image()
    palette_image = Image.fromarray(rgb).quantize(colors=32)
    buf = io.BytesIO()
    palette_image.save(buf, "PNG")

    image = load_image(buf.getvalue())

    assert image.meta.mode == "P"
    assert image.pixels.shape == (40, 48, 3)
    np.testing.assert_array_equal(image.pixels, np.asarray(palette_image.convert("RGB")))


def test_16_bit_png_is_scaled_by_its_min_max_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(1000, 3001, size=(30, 50)).astype(np.uint16)
    values[0, 0], values[0, 1] = 1000, 3000
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, "PNG")
    path = tmp_path / "sixteen.jpg"
    path.write_bytes(buf.getvalue())

    image = load_image(path)

    assert image.meta.source_format == "png"
    assert image.meta.mode.startswith("I;16")
    assert image.meta.bit_depth == 16
    assert image.meta.original_size == (50, 30)
    assert any("16-bit" in note for note in image.meta.notes)
    expected = np.rint((values.astype(np.float64) - 1000) * 255.0 / 2000).astype(np.uint8)
    np.testing.assert_array_equal(image.pixels, expected)
    assert image.pixels.min() == 0 and image.pixels.max() == 255


def test_multi_frame_tiff_uses_the_middle_frame(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((20, 30), value, np.uint8)) for value in (10, 20, 30, 40, 50)]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    path = tmp_path / "stack.png"
    path.write_bytes(buf.getvalue())

    image = load_image(path)

    assert image.meta.source_format == "tiff"
    assert image.meta.frames == 5
    assert image.meta.frame_index == 2
    assert np.all(image.pixels == 30)
    assert image.pixels.shape == (20, 30)
    assert any("frame 3 of 5" in note and "middle" in note for note in image.meta.notes)


def test_multi_frame_tiff_reports_and_caps_the_decoded_frame() -> None:
    # A small first page must not hide a large middle page: size and pixel cap are those of the frame decoded.
    frames = [Image.fromarray(np.full((s, s), v, np.uint8)) for s, v in ((10, 1), (100, 2), (10, 3))]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])

    image = load_image(buf.getvalue())
    assert image.pixels.shape == (100, 100)
    assert image.meta.original_size == (100, 100)
    with pytest.raises(ImageTooLargeError) as info:
        load_image(buf.getvalue(), max_pixels=1000)
    assert_one_line(info.value)


def test_describe_is_json_ready(brain_gray: np.ndarray, encoder: Callable[..., bytes]) -> None:
    info = describe(load_image(encoder(brain_gray, "PNG")))
    assert json.loads(json.dumps(info)) == info
    assert (info["format"], info["width"], info["height"], info["gray"]) == ("png", 256, 224, True)


def test_real_seed_dataset_decodes_with_manifest_sizes(shared_data: Path, manifest: Callable) -> None:
    """Every file of the seed's dataset decodes; sizes match the manifest; lying extensions are read by content."""
    root = shared_data / "brain_tumor_dataset"
    rows = manifest("brain_tumor_dataset")
    formats_of_jpg_files = set()
    for row in rows:
        path = root / row["relative_path"]
        image = load_image(path)
        assert image.meta.original_size == (int(row["width"]), int(row["height"])), path
        assert image.pixels.dtype == np.uint8
        assert image.pixels.shape[:2] == (int(row["height"]), int(row["width"]))
        if path.suffix.lower() in (".jpg", ".jpeg"):
            formats_of_jpg_files.add(image.meta.source_format)
    assert formats_of_jpg_files == {"jpeg", "png"}, "the seed's data has .jpg files that are PNG"


# -- DICOM -----------------------------------------------------------------------------------------------

LOSSLESS_MR_SMALL = [*MR_SMALL_ENCODINGS, "MR_small_expb.dcm"]


@pytest.fixture
def mr_small() -> tuple[pydicom.Dataset, np.ndarray]:
    """A fresh MR_small dataset (tests edit it in memory; ``Dataset.copy`` is shallow) and its stored values."""
    ds = read_dicom("MR_small.dcm")
    return ds, ds.pixel_array.astype(np.float64)


def standard_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, the linear window function onto 0..255, written out piecewise."""
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    linear = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    out = np.where(values <= low, 0.0, np.where(values > high, 255.0, linear))
    return np.rint(out)


@pytest.mark.parametrize("name", LOSSLESS_MR_SMALL)
def test_lossless_mr_small_variants_decode_identically(
    name: str, mr_small: tuple[pydicom.Dataset, np.ndarray], tmp_path: Path
) -> None:
    reference = load_image(dicom_file("MR_small.dcm"))
    path = tmp_path / f"{name}{WRONG_SUFFIX['dicom']}"
    path.write_bytes(dicom_file(name).read_bytes())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MR_small_padded: "excess padding to be removed"
        image = load_image(path)

    np.testing.assert_array_equal(image.pixels, reference.pixels)
    assert image.pixels.shape == (64, 64) and image.pixels.dtype == np.uint8
    meta = image.meta
    assert meta.source_format == "dicom"
    assert meta.modality == "MR"
    assert meta.original_size == (64, 64)
    assert meta.mode == "MONOCHROME2"
    assert meta.bit_depth == 16
    assert meta.frames == 1 and meta.frame_index == 0
    assert isinstance(meta.dicom, dict) and meta.dicom
    assert meta.dicom["Modality"] == "MR"
    assert meta.dicom["PhotometricInterpretation"] == "MONOCHROME2"
    assert set(meta.dicom) <= set(DESCRIPTIVE_TAGS) | set(IDENTIFYING_TAGS)
    assert all(isinstance(v, str) for v in meta.dicom.values())
    # MR_small has a window (600/1600): the result is the standard's linear window of the stored values
    ds, raw = mr_small
    expected = standard_window(raw, float(ds.WindowCenter), float(ds.WindowWidth))
    assert np.abs(image.pixels.astype(int) - expected).max() <= 1
    assert any("window" in note for note in meta.notes)


def test_monochrome1_is_inverted(mr_small: tuple[pydicom.Dataset, np.ndarray]) -> None:
    ds, _ = mr_small
    mono2 = load_image(dicom_bytes(ds))
    inverted = ds
    inverted.PhotometricInterpretation = "MONOCHROME1"

    mono1 = load_image(dicom_bytes(inverted))

    assert mono1.meta.mode == "MONOCHROME1"
    np.testing.assert_array_equal(mono1.pixels, 255 - mono2.pixels)
    assert any("MONOCHROME1" in note for note in mono1.meta.notes)
    assert not any("MONOCHROME1" in note for note in mono2.meta.notes)


def test_rescale_slope_intercept_applied_before_the_window(mr_small: tuple[pydicom.Dataset, np.ndarray]) -> None:
    ds, raw = mr_small
    original = load_image(dicom_bytes(ds)).pixels

    # Slope 2, intercept -100 with the window kept: values move, so the windowed result changes as specified.
    rescaled = read_dicom("MR_small.dcm")
    rescaled.RescaleSlope = 2
    rescaled.RescaleIntercept = -100
    rescaled.RescaleType = "US"
    changed = load_image(dicom_bytes(rescaled))
    expected = standard_window(raw * 2 - 100, float(ds.WindowCenter), float(ds.WindowWidth))
    assert np.abs(changed.pixels.astype(int) - expected).max() <= 1
    assert not np.array_equal(changed.pixels, original)
    assert any("rescale" in note for note in changed.meta.notes)

    # The window moved with the rescale (c' = 2c - 100 - 0.5, w' = 2w - 1 keeps the linear function):
    # identical pixels.
    rescaled.WindowCenter = 2 * float(ds.WindowCenter) - 100 - 0.5
    rescaled.WindowWidth = 2 * float(ds.WindowWidth) - 1
    np.testing.assert_array_equal(load_image(dicom_bytes(rescaled)).pixels, original)


def test_no_window_maps_the_full_range(mr_small: tuple[pydicom.Dataset, np.ndarray]) -> None:
    ds, raw = mr_small
    unwindowed = ds
    del unwindowed.WindowCenter
    del unwindowed.WindowWidth

    image = load_image(dicom_bytes(unwindowed))

    expected = np.rint((raw - raw.min()) * 255.0 / (raw.max() - raw.min()))
    assert np.abs(image.pixels.astype(int) - expected).max() <= 1  # rounding at .5 may go either way
    assert image.pixels.min() == 0 and image.pixels.max() == 255
    assert any("full" in note and "range" in note for note in image.meta.notes)
    assert not any("window centre" in note for note in image.meta.notes)


def test_voi_lut_sequence_is_applied_and_preferred(mr_small: tuple[pydicom.Dataset, np.ndarray]) -> None:
    ds, raw = mr_small
    first, last = int(raw.min()), int(raw.max())
    entries = last - first + 1
    with_lut = ds  # keeps its window too: the LUT must win

    # A threshold LUT: 0 below the median, 4095 from it on -> a binary image.
    threshold = int(np.median(raw))
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [entries, first, 16])
    item.add_new("LUTData", "US", np.where(np.arange(first, last + 1) >= threshold, 4095, 0).tolist())
    with_lut.VOILUTSequence = Sequence([item])
    binary = load_image(dicom_bytes(with_lut))
    np.testing.assert_array_equal(binary.pixels, np.where(raw >= threshold, 255, 0).astype(np.uint8))
    assert "VOI LUT applied" in binary.meta.notes
    assert not any("window centre" in note for note in binary.meta.notes)

    # A curved LUT (squares): output follows the table, scaled by its range.
    table = np.rint(4095 * (np.arange(entries) / (entries - 1)) ** 2)
    item.LUTData = table.astype(int).tolist()
    curved = load_image(dicom_bytes(with_lut))
    expected = np.rint(table[(raw - first).astype(int)] * 255.0 / 4095)
    assert np.abs(curved.pixels.astype(int) - expected).max() <= 1


def test_voi_lut_data_stored_as_ow_bytes(mr_small: tuple[pydicom.Dataset, np.ndarray]) -> None:
    ds, raw = mr_small
    first, last = int(raw.min()), int(raw.max())
    threshold = int(np.median(raw))
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [last - first + 1, first, 16])
    table = np.where(np.arange(first, last + 1) >= threshold, 4095, 0).astype("<u2")
    item.add_new("LUTData", "OW", table.tobytes())
    ds.VOILUTSequence = Sequence([item])

    image = load_image(dicom_bytes(ds))

    np.testing.assert_array_equal(image.pixels, np.where(raw >= threshold, 255, 0).astype(np.uint8))


def test_voi_lut_with_8_bit_entries_and_more_than_256_of_them(mr_small: tuple[pydicom.Dataset, np.ndarray]) -> None:
    ds, raw = mr_small
    first, last = int(raw.min()), int(raw.max())
    entries = last - first + 1
    assert entries > 256
    table = np.rint(255 * np.arange(entries) / (entries - 1)).astype(int)  # a linear ramp onto 8 bits
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [entries, first, 8])
    item.add_new("LUTData", "US", table.tolist())
    ds.VOILUTSequence = Sequence([item])

    image = load_image(dicom_bytes(ds))

    np.testing.assert_array_equal(image.pixels, table[(raw - first).astype(int)])


def test_malformed_voi_lut_is_a_typed_error(mr_small: tuple[pydicom.Dataset, np.ndarray]) -> None:
    ds, raw = mr_small
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4, int(raw.min()), 5])  # 5 bits per entry: not allowed
    item.add_new("LUTData", "US", [0, 1, 2, 3])
    ds.VOILUTSequence = Sequence([item])
    with pytest.raises(CorruptImageError) as info:
        load_image(dicom_bytes(ds))
    assert_one_line(info.value)


@pytest.mark.parametrize(
    ("name", "frames", "shape"),
    [("SC_rgb_rle_2frame.dcm", 2, (100, 100, 3)), ("examples_ybr_color.dcm", 30, (240, 320, 3))],
)
def test_multi_frame_dicom_uses_the_middle_frame(name: str, frames: int, shape: tuple[int, ...]) -> None:
    image = load_image(dicom_file(name))

    middle = frames // 2
    assert image.meta.frames == frames
    assert image.meta.frame_index == middle
    assert image.pixels.shape == shape
    assert any(f"frame {middle + 1} of {frames}" in note and "middle" in note for note in image.meta.notes)
    expected = read_dicom(name).pixel_array[middle]  # pydicom converts YBR to RGB
    np.testing.assert_array_equal(image.pixels, expected)
    # really the middle: it differs from the first frame
    assert not np.array_equal(image.pixels, read_dicom(name).pixel_array[0])


def test_multi_frame_dicom_without_file_meta() -> None:
    """A preamble-less multi-frame file (implicit VR, no file meta) still decodes its middle frame."""
    ds = read_dicom("SC_rgb_rle_2frame.dcm")
    ds.decompress()
    expected = ds.pixel_array[1]
    del ds.file_meta
    ds.preamble = None
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert sniff_format(buf.getvalue()[:256]) == "dicom"

    image = load_image(buf.getvalue())

    np.testing.assert_array_equal(image.pixels, expected)
    assert image.meta.frame_index == 1


def test_palette_colour_dicom_is_expanded_to_rgb() -> None:
    from pydicom.pixels.processing import apply_color_lut

    ds = read_dicom("examples_palette.dcm")
    image = load_image(dicom_file("examples_palette.dcm"))

    assert image.meta.mode == "PALETTE COLOR"
    assert image.pixels.shape == (ds.Rows, ds.Columns, 3)
    assert image.pixels.dtype == np.uint8
    assert any("palette" in note for note in image.meta.notes)
    lut_rgb = apply_color_lut(ds.pixel_array, ds).astype(np.float64)
    expected = np.rint(lut_rgb * 255.0 / 65535.0)
    assert np.abs(image.pixels.astype(int) - expected).max() <= 1
    assert len(np.unique(image.pixels.reshape(-1, 3), axis=0)) > 10


@pytest.mark.parametrize(
    ("name", "size", "modality"),
    [
        ("JPGExtended.dcm", (256, 1024), "NM"),
        ("CT_small.dcm", (128, 128), "CT"),
        ("liver_1frame.dcm", (512, 512), "SEG"),
    ],
)
def test_other_dicom_objects_decode(name: str, size: tuple[int, int], modality: str) -> None:
    image = load_image(dicom_file(name))
    assert image.meta.original_size == size
    assert image.meta.modality == modality
    assert image.pixels.shape == (size[1], size[0])
    assert image.pixels.min() == 0 and image.pixels.max() == 255


def test_ct_rescale_goes_to_hounsfield_units_before_full_range() -> None:
    ds = read_dicom("CT_small.dcm")
    assert "RescaleIntercept" in ds and "WindowCenter" not in ds
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    image = load_image(dicom_file("CT_small.dcm"))
    expected = np.rint((hu - hu.min()) * 255.0 / (hu.max() - hu.min()))
    assert np.abs(image.pixels.astype(int) - expected).max() <= 1
    assert any("rescale" in note for note in image.meta.notes)


# -- errors ----------------------------------------------------------------------------------------------


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("scan.jpg", b"not really")
    return buf.getvalue()


TINY_PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"  # noqa: E501


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(1).bytes(4096),
        TINY_PDF,
        _zip_bytes(),
        b"patient: anonymous\nfinding: none\n",
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    ],
    ids=["random", "pdf", "zip", "text", "gif"],
)
def test_unsupported_content(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "upload.jpg"
    path.write_bytes(data)
    for source in (data, path):
        with pytest.raises(UnsupportedImageError) as info:
            load_image(source)
        assert_one_line(info.value)


def test_empty_input(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    for source in (b"", path):
        with pytest.raises(EmptyImageError) as info:
            load_image(source)
        assert_one_line(info.value)


def test_truncated_jpeg(brain_gray: np.ndarray, encoder: Callable[..., bytes]) -> None:
    jpeg = encoder(brain_gray, "JPEG", quality=90)
    assert load_image(jpeg).meta.source_format == "jpeg"
    with pytest.raises(CorruptImageError) as info:
        load_image(jpeg[: len(jpeg) // 2])
    assert_one_line(info.value)


def test_truncated_real_jpeg(shared_data: Path, manifest: Callable) -> None:
    row = next(r for r in manifest("brain_tumor_dataset") if r["relative_path"].lower().endswith(".jpg"))
    data = (shared_data / "brain_tumor_dataset" / row["relative_path"]).read_bytes()
    if load_image(data).meta.source_format != "jpeg":
        pytest.skip("first .jpg of the manifest is not a JPEG")
    with pytest.raises(CorruptImageError) as info:
        load_image(data[: len(data) // 2])
    assert_one_line(info.value)


def test_corrupted_png_body(brain_gray: np.ndarray, encoder: Callable[..., bytes]) -> None:
    png = encoder(brain_gray, "PNG")
    start = png.index(b"IDAT") + 4
    length = struct.unpack(">I", png[start - 8 : start - 4])[0]
    damaged = bytearray(png)
    middle = start + length // 3
    damaged[middle : middle + 64] = bytes(64)
    with pytest.raises(CorruptImageError) as info:
        load_image(bytes(damaged))
    assert_one_line(info.value)
    with pytest.raises(CorruptImageError):
        load_image(png[: len(png) // 2])  # truncated PNG


def test_png_header_claiming_a_huge_image(brain_gray: np.ndarray, encoder: Callable[..., bytes]) -> None:
    png = encoder(brain_gray[:16, :16], "PNG")
    assert load_image(png).meta.original_size == (16, 16)
    # far beyond PIL's own decompression-bomb limit
    with pytest.raises(ImageTooLargeError) as info:
        load_image(patch_png_size(png, 100_000, 100_000))
    assert_one_line(info.value)
    # below PIL's limit, above our default cap of 40 MP: our own check refuses it before decoding
    assert DEFAULT_MAX_PIXELS < 7000 * 7000
    with pytest.raises(ImageTooLargeError) as info:
        load_image(patch_png_size(png, 7000, 7000))
    assert_one_line(info.value)
    assert "40,000,000" in str(info.value)


def test_max_pixels_argument(brain_gray: np.ndarray, encoder: Callable[..., bytes]) -> None:
    png = encoder(brain_gray, "PNG")  # 256 × 224 = 57 344 pixels
    assert load_image(png, max_pixels=256 * 224).pixels.shape == (224, 256)
    with pytest.raises(ImageTooLargeError) as info:
        load_image(png, max_pixels=256 * 224 - 1)
    assert_one_line(info.value)
    dcm = dicom_file("MR_small.dcm")  # 64 × 64
    assert load_image(dcm, max_pixels=64 * 64).pixels.shape == (64, 64)
    with pytest.raises(ImageTooLargeError):
        load_image(dcm, max_pixels=64 * 64 - 1)


def test_dicom_claiming_huge_rows_and_columns(mr_small: tuple[pydicom.Dataset, np.ndarray]) -> None:
    ds, _ = mr_small
    huge = ds
    huge.Rows = 65535
    huge.Columns = 65535
    with pytest.raises(ImageTooLargeError) as info:
        load_image(dicom_bytes(huge))
    assert_one_line(info.value)


@pytest.mark.parametrize("name", ["rtplan.dcm", "ExplVR_LitEndNoMeta.dcm"])
def test_dicom_without_pixels(name: str, tmp_path: Path) -> None:
    path = tmp_path / "plan.png"
    path.write_bytes(dicom_file(name).read_bytes())
    with pytest.raises(NoPixelDataError) as info:
        load_image(path)
    assert_one_line(info.value)
    assert "RTPLAN" in str(info.value)


def test_truncated_dicom() -> None:
    with pytest.raises(CorruptImageError) as info:
        load_image(dicom_file("MR_truncated.dcm"))
    assert_one_line(info.value)


def test_directory_and_missing_path(tmp_path: Path) -> None:
    for source in (tmp_path, tmp_path / "missing.png", str(tmp_path / "missing.png")):
        with pytest.raises(ImageError) as info:
            load_image(source)
        assert_one_line(info.value)
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_error_hierarchy() -> None:
    for cls in (EmptyImageError, UnsupportedImageError, CorruptImageError, ImageTooLargeError, NoPixelDataError):
        assert issubclass(cls, ImageError)
        assert issubclass(cls, BrainTumorError)
        assert issubclass(cls, ValueError)


# -- decode limits (issue 13 item 4) -----------------------------------------------------------------------------
def _apng(values: list[int], size: int = 32) -> bytes:
    frames = [Image.new("L", (size, size), v) for v in values]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:], duration=10)
    return buf.getvalue()


def test_animated_png_uses_the_default_image_without_decoding_later_frames() -> None:
    """Reaching the middle frame of an APNG decodes every frame before it (56 s of CPU for 4000 frames)."""
    image = load_image(_apng([10, 128, 250]))
    assert image.meta.frames == 3 and image.meta.frame_index == 0
    assert int(image.pixels[0, 0]) == 10
    assert "animated PNG: used frame 1 of 3 (the default image)" in image.meta.notes


def test_frame_count_is_checked_from_the_header() -> None:
    from braintumor.imaging.types import ImageLimits

    data = _apng([0, 255] * 2000, size=16)
    with pytest.raises(ImageTooLargeError, match="PNG declares 4,000, the cap is 1,000") as info:
        load_image(data, limits=ImageLimits(max_frames=1000))
    assert_one_line(info.value)


def test_decoded_bytes_are_checked_before_decoding(encoder: Callable[..., bytes]) -> None:
    from braintumor.imaging.types import ImageLimits

    rgb = encoder(np.zeros((600, 800, 3), np.uint8), "PNG")
    limits = ImageLimits(max_frame_bytes=1024 * 1024)
    with pytest.raises(ImageTooLargeError, match=r"800×600×3×1 bytes = 1\.4 MB decoded exceeds the cap of 1 MB"):
        load_image(rgb, limits=limits)
    gray = encoder(np.zeros((600, 800), np.uint8), "PNG")
    assert load_image(gray, limits=limits).pixels.shape == (600, 800)  # 0.46 MB: one byte a pixel
