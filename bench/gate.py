"""Measure the input gate: how many non-MRI images it rejects, how many real MRI slices it wrongly rejects.

    python bench/gate.py                      # export the bench model, fit the gate, write bench/results-gate.md

The model is the real one trained by ``bench/train_backbones.py`` (``runs/bench-train/mobilenet_v2``). The gate
is fitted on the *train* part of a grouped split of all three shared datasets (thresholds on its *val* part) and
measured on its *test* part, which neither the gate's statistics nor its thresholds ever see. The non-MRI corpus
is built in memory from images bundled with installed packages (scikit-image, pydicom, matplotlib) and from
synthetic renderings (blank, noise, gradients, documents, screenshots, charts, checkerboards, crude chest X-rays);
nothing is downloaded and nothing is written to the repository except the results file.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from braintumor.imaging.io import load_image
from braintumor.imaging.types import LoadedImage

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = ("brain_tumor_dataset", "br35h", "brain_tumor_mri_4class")

#: The pydicom test files that ship inside the wheel (other names would trigger a download).
PYDICOM_FILES = (
    "CT_small.dcm",
    "examples_palette.dcm",
    "examples_ybr_color.dcm",
    "JPGExtended.dcm",
    "liver_1frame.dcm",
    "rtdose.dcm",
)


@dataclass(frozen=True)
class Sample:
    """One corpus image: its kind (the breakdown row), a readable name, and the decoded image."""

    kind: str
    name: str
    image: LoadedImage


# -- corpus helpers -----------------------------------------------------------------------------------------
def _png(pixels: np.ndarray | Image.Image) -> LoadedImage:
    return _encode(pixels, "PNG")


def _jpeg(pixels: np.ndarray | Image.Image) -> LoadedImage:
    return _encode(pixels, "JPEG", quality=90)


def _encode(pixels: np.ndarray | Image.Image, fmt: str, **kwargs: Any) -> LoadedImage:
    """Round-trip through an encoded file so that the corpus takes the same decoding path as an upload."""
    im = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    if fmt == "JPEG" and im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return load_image(buf.getvalue())


def _u8(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    return np.clip((values - lo) * 255.0 / (hi - lo), 0, 255).astype(np.uint8)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L")) if rgb.ndim == 3 else rgb


def _crops(pixels: np.ndarray, rng: np.random.Generator, n: int) -> Iterator[np.ndarray]:
    h, w = pixels.shape[:2]
    for _ in range(n):
        ch, cw = int(h * rng.uniform(0.4, 0.7)), int(w * rng.uniform(0.4, 0.7))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        yield np.ascontiguousarray(pixels[y : y + ch, x : x + cw])


def _font(size: int, name: str = "DejaVuSans.ttf") -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    return ImageFont.truetype(str(path), size) if path.is_file() else ImageFont.load_default()


WORDS = tuple(
    " ".join((
        "the patient was seen in clinic today for follow up of headaches report summary results method data analysis",
        "table figure invoice total amount due payment terms quarterly revenue grew percent compared with last year",
        "please find attached the signed agreement meeting notes action items owner deadline status review approved",
    )).split()
)  # fmt: skip


def _sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(str(w) for w in rng.choice(WORDS, n))


# -- the corpus, by source -----------------------------------------------------------------------------------
def skimage_samples(rng: np.random.Generator) -> Iterator[Sample]:
    """Photos, micrographs, documents and patterns bundled with scikit-image (``brain()`` is an MRI: not here)."""
    import skimage.data as data

    colour = {
        "astronaut": data.astronaut(),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "motorcycle": data.stereo_motorcycle()[0],
        "hubble_deep_field": data.hubble_deep_field(),
        "immunohistochemistry": data.immunohistochemistry(),
        "retina": data.retina(),
        "colorwheel": data.colorwheel(),
        "logo": data.logo()[..., :3],
    }
    gray = {
        "camera": data.camera(),
        "brick": data.brick(),
        "cell": data.cell(),
        "clock": data.clock(),
        "coins": data.coins(),
        "grass": data.grass(),
        "gravel": data.gravel(),
        "moon": data.moon(),
        "microaneurysms": data.microaneurysms(),
    }
    kinds = {
        "immunohistochemistry": "microscopy",
        "cell": "microscopy",
        "microaneurysms": "microscopy",
        "retina": "fundus photo",
        "hubble_deep_field": "astronomy",
        "colorwheel": "graphic",
        "logo": "graphic",
    }
    for name, pixels in colour.items():
        kind = kinds.get(name, "photo (colour)")
        yield Sample(kind, f"skimage.{name}", _jpeg(pixels))
        yield Sample(kinds.get(name, "photo (gray)"), f"skimage.{name} gray", _png(_gray(pixels)))
        for k, crop in enumerate(_crops(pixels, rng, 4)):
            yield Sample(kind, f"skimage.{name} crop{k}", _jpeg(crop))
            yield Sample(kinds.get(name, "photo (gray)"), f"skimage.{name} gray crop{k}", _png(_gray(crop)))
    for name, pixels in gray.items():
        kind = kinds.get(name, "photo (gray)")
        yield Sample(kind, f"skimage.{name}", _png(pixels))
        for k, crop in enumerate(_crops(pixels, rng, 4)):
            yield Sample(kind, f"skimage.{name} crop{k}", _png(crop))
    yield Sample("document", "skimage.page", _png(data.page()))
    yield Sample("document", "skimage.text", _png(data.text()))
    yield Sample("pattern", "skimage.checkerboard", _png(data.checkerboard()))
    yield Sample("graphic", "skimage.horse", _png(data.horse().astype(np.uint8) * 255))
    for k in range(3):
        blobs = data.binary_blobs(length=256, blob_size_fraction=0.1 + 0.05 * k, rng=int(rng.integers(1 << 30)))
        yield Sample("pattern", f"skimage.binary_blobs {k}", _png(blobs.astype(np.uint8) * 255))
    yield Sample("CT phantom", "skimage.shepp_logan_phantom", _png(_u8(data.shepp_logan_phantom())))
    faces = data.lfw_subset()
    for k in range(0, 200, 10):
        face = Image.fromarray(_u8(faces[k])).resize((200, 200), Image.Resampling.BICUBIC)
        yield Sample("photo (gray)", f"skimage.lfw_subset face {k}", _png(face))


def pydicom_samples() -> Iterator[Sample]:
    """pydicom's bundled non-MR test files: once as DICOM (metadata), once as a bare PNG of their pixels."""
    from pydicom.data import get_testdata_file

    for name in PYDICOM_FILES:
        path = get_testdata_file(name)
        if path is None:
            continue
        image = load_image(path)
        modality = image.meta.modality or "?"
        yield Sample("DICOM other modality", f"pydicom {name} ({modality})", image)
        yield Sample("other modality, pixels only", f"pydicom {name} ({modality}) as PNG", _png(image.pixels))


def matplotlib_samples(rng: np.random.Generator) -> Iterator[Sample]:
    """matplotlib's sample data: a photo, logos, terrain models, and charts drawn from its stock series."""
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        hopper = np.asarray(Image.open(fh).convert("RGB"))
    yield Sample("photo (colour)", "matplotlib grace_hopper.jpg", _jpeg(hopper))
    yield Sample("photo (gray)", "matplotlib grace_hopper.jpg gray", _png(_gray(hopper)))
    for crop_k, crop in enumerate(_crops(hopper, rng, 4)):
        yield Sample("photo (colour)", f"matplotlib grace_hopper.jpg crop{crop_k}", _jpeg(crop))
    for name in ("logo2.png", "Minduka_Present_Blue_Pack.png"):
        with cbook.get_sample_data(name) as fh:
            yield Sample("graphic", f"matplotlib {name}", _png(Image.open(fh).convert("RGB")))
    for name, key in (("topobathy.npz", "topo"), ("jacksboro_fault_dem.npz", "elevation")):
        with np.load(cbook.get_sample_data(name, asfileobj=False)) as npz:
            grid = np.asarray(npz[key], dtype=np.float64)
        yield Sample("terrain map", f"matplotlib {name} gray", _png(_u8(grid)))
        yield Sample("terrain map", f"matplotlib {name} coloured", _png(_colormap(grid, "terrain")))
        yield Sample("terrain map", f"matplotlib {name} hillshade", _png(_hillshade(grid)))


def mri_extra_positive() -> LoadedImage:
    """matplotlib's ``s1045.ima`` is a real 256×256 head MRI slice: reported as an extra positive, not a negative."""
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("s1045.ima.gz") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    im = np.frombuffer(raw, np.uint16).reshape(256, 256).astype(np.float64)
    return _png(_u8(im))


def _colormap(values: np.ndarray, name: str) -> np.ndarray:
    from matplotlib import colormaps

    rgba = colormaps[name](_u8(values) / 255.0)
    return (np.asarray(rgba)[..., :3] * 255).astype(np.uint8)


def _hillshade(z: np.ndarray) -> np.ndarray:
    dy, dx = np.gradient(z)
    slope = np.pi / 2 - np.arctan(np.hypot(dx, dy))
    aspect = np.arctan2(-dx, dy)
    az, alt = np.radians(315), np.radians(45)
    shade = np.sin(alt) * np.sin(slope) + np.cos(alt) * np.cos(slope) * np.cos(az - aspect)
    return _u8(shade)


def _figure_to_rgb(draw: Callable[[Any], None], size: tuple[float, float] = (6.4, 4.8), dpi: int = 80) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size, dpi=dpi)
    try:
        draw(fig)
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())  # type: ignore[attr-defined]
        return np.ascontiguousarray(rgba[..., :3])
    finally:
        plt.close(fig)


def chart_samples(rng: np.random.Generator) -> Iterator[Sample]:
    """Line, bar, scatter, pie, histogram and heat-map charts, light and dark styles."""
    import matplotlib.cbook as cbook

    with np.load(cbook.get_sample_data("goog.npz", asfileobj=False)) as npz:
        price = np.asarray(npz["price_data"]["adj_close"], dtype=np.float64)

    def line(fig: Any) -> None:
        ax = fig.add_subplot()
        ax.plot(price[-250:])
        ax.set_title("GOOG adjusted close")
        ax.grid(True)

    def bars(fig: Any) -> None:
        ax = fig.add_subplot()
        ax.bar(list("ABCDEFG"), rng.uniform(1, 10, 7), color="tab:orange")
        ax.set_ylabel("count")

    def scatter(fig: Any) -> None:
        ax = fig.add_subplot()
        x = rng.normal(size=300)
        ax.scatter(x, x * 0.5 + rng.normal(size=300), s=8, c="k")

    def pie(fig: Any) -> None:
        fig.add_subplot().pie(rng.uniform(1, 5, 5), labels=list("abcde"))

    def hist(fig: Any) -> None:
        fig.add_subplot().hist(rng.normal(size=2000), bins=40, color="gray")

    def heat(fig: Any) -> None:
        ax = fig.add_subplot()
        im = ax.imshow(rng.normal(size=(20, 20)).cumsum(0), cmap="viridis")
        fig.colorbar(im)

    def heat_gray(fig: Any) -> None:
        ax = fig.add_subplot()
        ax.imshow(rng.normal(size=(64, 64)).cumsum(0).cumsum(1), cmap="gray")
        ax.set_axis_off()

    def multi(fig: Any) -> None:
        for k in range(4):
            fig.add_subplot(2, 2, k + 1).plot(rng.normal(size=50).cumsum())

    import matplotlib.pyplot as plt

    draws = {"line": line, "bars": bars, "scatter": scatter, "pie": pie, "histogram": hist, "heatmap": heat,
             "gray heatmap": heat_gray, "small multiples": multi}  # fmt: skip
    for name, draw in draws.items():
        yield Sample("chart", f"chart {name}", _png(_figure_to_rgb(draw)))
        with plt.style.context("dark_background"):
            yield Sample("chart", f"chart {name} dark", _png(_figure_to_rgb(draw)))


def synthetic_samples(rng: np.random.Generator) -> Iterator[Sample]:
    """Blank, uniform, noise, gradients, checkerboards, shapes, documents, screenshots and chest X-rays."""
    for v in (0, 1, 20, 128, 235, 255):
        yield Sample("blank / uniform", f"blank gray {v}", _png(np.full((256, 256), v, np.uint8)))
    yield Sample("blank / uniform", "blank 1×1", _png(np.zeros((1, 1), np.uint8)))
    yield Sample("blank / uniform", "blank tall 1000×50", _png(np.zeros((1000, 50), np.uint8)))
    for c in ((255, 0, 0), (0, 128, 0), (0, 0, 255), (255, 255, 0), (240, 240, 255), (30, 30, 40), (128, 64, 0)):
        yield Sample("blank / uniform", f"uniform colour {c}", _png(np.full((200, 300, 3), c, np.uint8)))
    near = np.full((256, 256), 100, np.uint8) + rng.integers(0, 3, (256, 256)).astype(np.uint8)
    yield Sample("blank / uniform", "near-constant 100±1", _png(near))
    for sigma in (10, 40, 80):
        for size in (64, 256, 1024):
            noise = np.clip(rng.normal(128, sigma, (size, size)), 0, 255).astype(np.uint8)
            yield Sample("noise", f"gaussian gray σ={sigma} {size}px", _png(noise))
    for size in (128, 512):
        yield Sample("noise", f"uniform colour noise {size}px", _png(rng.integers(0, 256, (size, size, 3), np.uint8)))
        yield Sample("noise", f"uniform gray noise {size}px", _jpeg(rng.integers(0, 256, (size, size), np.uint8)))
    for density in (0.02, 0.2):
        for base in (0, 128):
            img = np.full((300, 300), base, np.uint8)
            mask = rng.random(img.shape) < density
            img[mask] = rng.choice(np.array([0, 255], np.uint8), int(mask.sum()))
            yield Sample("noise", f"salt & pepper {density:.0%} on {base}", _png(img))
    for k in range(3):
        smooth = np.asarray(
            Image.fromarray(rng.integers(0, 256, (16, 16), np.uint8)).resize((256, 256), Image.Resampling.BICUBIC)
        )
        yield Sample("noise", f"smooth value noise {k}", _png(smooth))
        clouds = sum(
            np.asarray(Image.fromarray(rng.normal(0, 1, (s, s)).astype(np.float32), "F").resize((256, 256))) * (64 / s)
            for s in (4, 8, 16, 32, 64)
        )
        yield Sample("noise", f"fractal clouds {k}", _png(_u8(np.asarray(clouds))))
    yy, xx = np.mgrid[0:256, 0:256] / 255.0
    gradients = {
        "horizontal": xx,
        "vertical": yy,
        "diagonal": (xx + yy) / 2,
        "radial bright centre": 1 - np.clip(np.hypot(xx - 0.5, yy - 0.5) * 2, 0, 1),
        "radial dark centre": np.clip(np.hypot(xx - 0.5, yy - 0.5) * 2, 0, 1),
        "sinusoid": 0.5 + 0.5 * np.sin(xx * 20),
    }
    for name, g in gradients.items():
        yield Sample("gradient", f"gradient {name}", _png(_u8(g)))
    yield Sample("gradient", "gradient colour", _png(np.stack([_u8(xx), _u8(yy), _u8(1 - xx)], axis=2)))
    for cells, size in ((2, 256), (8, 256), (32, 512), (4, 100)):
        board = ((np.indices((size, size)) // (size // cells)).sum(0) % 2 * 255).astype(np.uint8)
        yield Sample("pattern", f"checkerboard {cells}×{cells}", _png(board))
    board = ((np.indices((256, 256)) // 32).sum(0) % 2).astype(bool)
    yield Sample(
        "pattern", "checkerboard red/blue", _png(np.where(board[..., None], [200, 0, 0], [0, 0, 200]).astype(np.uint8))
    )
    yield Sample("pattern", "stripes", _png(((np.arange(256)[None, :] // 8) % 2 * 255).repeat(256, 0).astype(np.uint8)))
    for k in range(12):
        yield Sample("shapes", f"random shapes {k}", _png(_shapes(rng, dark=k % 2 == 0, colour=k % 3 == 2)))
    for k in range(24):
        yield Sample("document", f"text document {k}", _png(_document(rng, k)))
    for k in range(20):
        yield Sample("screenshot", f"UI screenshot {k}", _png(_screenshot(rng, dark=k % 2 == 1)))
    for k in range(24):
        yield Sample("chest X-ray (synthetic)", f"crude chest X-ray {k}", _png(_chest_xray(rng, k)))


def _shapes(rng: np.random.Generator, *, dark: bool, colour: bool) -> np.ndarray:
    im = Image.new("RGB" if colour else "L", (320, 240), 0 if dark else 255)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(0, 280)), int(rng.integers(0, 200))
        box = (x0, y0, x0 + int(rng.integers(20, 120)), y0 + int(rng.integers(20, 120)))
        fill: Any = tuple(int(v) for v in rng.integers(0, 256, 3)) if colour else int(rng.integers(0, 256))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return np.asarray(im)


def _document(rng: np.random.Generator, k: int) -> np.ndarray:
    """A text page: black on white (or white on black), one of several fonts, optionally with a table."""
    inverted = k % 4 == 3
    paper, ink = (20, 235) if inverted else (int(rng.integers(235, 256)), int(rng.integers(0, 40)))
    w, h = (850, 1100) if k % 3 else (1100, 700)
    im = Image.new("L", (w, h), paper)
    draw = ImageDraw.Draw(im)
    fonts = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
    size = int(rng.integers(12, 26))
    font = _font(size, fonts[k % 3])
    title = _font(size + 12, "DejaVuSans-Bold.ttf")
    y = 60
    draw.text((60, y), _sentence(rng, 4).title(), fill=ink, font=title)
    y += size + 40
    while y < h - 80:
        if k % 5 == 2 and 300 < y < 360:
            for row in range(6):
                for col in range(4):
                    x0, y0 = 60 + col * 180, y + row * (size + 12)
                    draw.rectangle((x0, y0, x0 + 180, y0 + size + 12), outline=ink)
                    draw.text((x0 + 6, y0 + 4), f"{rng.uniform(0, 1000):.1f}", fill=ink, font=font)
            y += 6 * (size + 12) + 20
        draw.text((60, y), _sentence(rng, int(rng.integers(5, 12))), fill=ink, font=font)
        y += int(size * 1.5)
    return np.asarray(im.filter(ImageFilter.GaussianBlur(0.4)) if k % 2 else im)


def _screenshot(rng: np.random.Generator, *, dark: bool) -> np.ndarray:
    """A crude application window: title bar, sidebar, buttons, text lines and a picture placeholder."""
    bg = (30, 30, 35) if dark else (245, 245, 248)
    fg = (220, 220, 220) if dark else (30, 30, 30)
    w, h = 1280, 800
    im = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(im)
    accent = tuple(int(v) for v in rng.integers(40, 220, 3))
    draw.rectangle((0, 0, w, 36), fill=(50, 50, 60) if dark else (220, 220, 225))
    for i, c in enumerate(((255, 95, 86), (255, 189, 46), (39, 201, 63))):
        draw.ellipse((12 + i * 22, 11, 26 + i * 22, 25), fill=c)
    side = int(rng.integers(180, 300))
    draw.rectangle((0, 36, side, h), fill=(40, 40, 48) if dark else (232, 232, 238))
    font = _font(15)
    for i in range(12):
        draw.text((20, 60 + i * 34), _sentence(rng, 2), fill=fg, font=font)
    for i in range(int(rng.integers(2, 5))):
        x0 = side + 30 + i * 140
        draw.rounded_rectangle((x0, 60, x0 + 120, 95), 8, fill=accent)
        draw.text((x0 + 14, 68), _sentence(rng, 1), fill=(255, 255, 255), font=font)
    y = 130
    while y < h - 40:
        draw.text((side + 30, y), _sentence(rng, int(rng.integers(6, 14))), fill=fg, font=font)
        y += 26
    if rng.random() < 0.6:
        x0, y0 = int(rng.integers(side + 300, w - 320)), int(rng.integers(140, h - 300))
        draw.rectangle((x0, y0, x0 + 280, y0 + 200), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return np.asarray(im)


def _chest_xray(rng: np.random.Generator, k: int) -> np.ndarray:
    """A crude frontal chest radiograph: neck and shoulders, dark lungs over domed diaphragms, ribs, spine, heart."""
    n = 512
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) / n

    def soft(inside: np.ndarray, edge: float = 0.02) -> np.ndarray:
        return 1 / (1 + np.exp(np.clip(-inside / edge, -50, 50)))

    torso = np.maximum.reduce([
        soft(1 - (np.abs(xx - 0.5) / rng.uniform(0.42, 0.47)) ** 2 - ((yy - 0.75) / 0.6) ** 4),
        soft(1 - ((xx - 0.5) / 0.47) ** 2 - ((yy - 0.3) / 0.14) ** 2),
        soft(0.09 - np.abs(xx - 0.5), 0.01) * (yy < 0.25),
    ])  # fmt: skip
    density = torso * rng.uniform(120, 165)
    top, bottom = rng.uniform(0.16, 0.22), rng.uniform(0.78, 0.85)
    for side in (-1, 1):
        cx, w = 0.5 + side * rng.uniform(0.18, 0.21), rng.uniform(0.13, 0.17)
        dome = bottom - 0.08 * (1 - ((xx - cx) / w) ** 2)
        lung = soft(1 - ((xx - cx) / w) ** 2 - ((yy - (top + bottom) / 2) / ((bottom - top) / 2)) ** 2, 0.08)
        density -= rng.uniform(90, 115) * lung * soft(dome - yy, 0.01) * (1 - 0.3 * yy)
    density += 45 * soft(1 - ((xx - 0.56) / 0.13) ** 2 - ((yy - 0.68) / 0.12) ** 2, 0.15)
    density += 40 * soft(0.035 - np.abs(xx - 0.5), 0.008) * torso * (yy > 0.2)
    bones = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(bones)
    for rib in range(10):
        y = int(n * (top + rib * (bottom - top) / 10))
        for side in (-1, 1):
            x_mid = int(n * (0.5 + side * 0.2))
            draw.arc((x_mid - int(n * 0.21), y - 25, x_mid + int(n * 0.21), y + 60), 195, 345, fill=255, width=8)
    draw.line((n * 0.16, n * 0.18, n * 0.46, n * 0.23), fill=255, width=13)
    draw.line((n * 0.84, n * 0.18, n * 0.54, n * 0.23), fill=255, width=13)
    density += 45 * np.asarray(bones.filter(ImageFilter.GaussianBlur(2)), np.float64) / 255 * torso
    density += rng.uniform(5, 25) + rng.normal(0, rng.uniform(2, 5), density.shape)
    out = Image.fromarray(np.clip(density, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(1, 3)))
    if k % 3 == 0:
        ImageDraw.Draw(out).text((int(n * 0.88), int(n * 0.05)), "L", fill=255, font=_font(36, "DejaVuSans-Bold.ttf"))
    pixels = np.asarray(out)
    return (255 - pixels) if k % 6 == 5 else pixels


def build_corpus(seed: int = 0) -> list[Sample]:
    """Every non-MRI sample, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    samples: list[Sample] = []
    for source in (skimage_samples(rng), pydicom_samples(), matplotlib_samples(rng), chart_samples(rng),
                   synthetic_samples(rng)):  # fmt: skip
        samples.extend(source)
    return samples


def _compare_feature_scores(features: dict[str, np.ndarray]) -> list[str]:
    """The gate's prototype distance against two alternatives on the same features, each thresholded at the 99.5th
    percentile of the val part: why the gate uses prototypes (markdown lines)."""
    from braintumor.inference.gate import PrototypeModel

    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))

    z = {k: unit(v) for k, v in features.items()}
    mean = z["train"].mean(axis=0)
    _, sv, vt = np.linalg.svd(z["train"] - mean, full_matrices=False)
    basis, var = vt[:64], sv[:64] ** 2 / (len(z["train"]) - 1)

    def pca_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = unit(x) - mean
        p = c @ basis.T
        return np.sqrt((p**2 / var).sum(axis=1) / len(var)), np.linalg.norm(c - p @ basis, axis=1)

    md_val, res_val = pca_parts(features["val"])
    md_scale, res_scale = np.percentile(md_val, 99.5), np.percentile(res_val, 99.5)

    def pca(x: np.ndarray) -> np.ndarray:
        md, res = pca_parts(x)
        return np.asarray(np.maximum(md / md_scale, res / res_scale))

    exact = PrototypeModel.fit(features["train"], len(features["train"]))
    methods: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "512 prototypes (the gate)": PrototypeModel.fit(features["train"]).distances,
        "exact nearest training image (5.5k rows stored)": exact.distances,
        "PCA(64) whitened Mahalanobis + residual (max of both, each scaled)": pca,
    }
    lines = [
        "Feature-stage alternatives on the same features (each thresholded at the 99.5th percentile of val; "
        "feature stage alone, without the statistics):",
        "",
        "| novelty score | test MRIs rejected | highest test MRI | non-MRI rejected | lowest non-MRI | s1045 |",
        "|---|---|---|---|---|---|",
    ]
    for name, score in methods.items():
        t = float(np.percentile(score(features["val"]), 99.5))
        test, corpus = score(features["test"]) / t, score(features["corpus"]) / t
        extra = score(features["extra"])[0] / t
        lines.append(
            f"| {name} | {_rate(int((test > 1).sum()), len(test))} | {test.max():.2f} | "
            f"{_rate(int((corpus > 1).sum()), len(corpus))} | {corpus.min():.2f} | {extra:.2f} |"
        )
    return lines


# -- the measurement -----------------------------------------------------------------------------------------
def _rate(k: int, n: int) -> str:
    return f"{k / n:.2%} ({k}/{n})" if n else "n/a (0 images)"


def _interval(k: int, n: int) -> str:
    """Exact (Clopper–Pearson) 95 % interval of a rate: how much a small corpus can claim."""

    def tail(p: float, upper: bool) -> float:  # P(X >= k) when upper, else P(X <= k), X ~ Binomial(n, p)
        terms = range(k, n + 1) if upper else range(0, k + 1)
        if p <= 0.0 or p >= 1.0:
            return float(any((j == 0) if p <= 0.0 else (j == n) for j in terms))
        logs = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * math.log(p)
                + (n - j) * math.log1p(-p) for j in terms]  # fmt: skip
        top = max(logs)
        return math.exp(top) * sum(math.exp(v - top) for v in logs)

    def solve(f: Callable[[float], float]) -> float:  # f increasing in p; find f(p) = 0.025
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) < 0.025 else (lo, mid)
        return (lo + hi) / 2

    low = solve(lambda p: tail(p, upper=True)) if k > 0 else 0.0
    high = solve(lambda p: 0.05 - tail(p, upper=False)) if k < n else 1.0
    return f"{low:.1%}–{high:.1%}"


def _predict_all(predictor: Any, images: list[LoadedImage], batch: int = 32) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(images), batch):
        out.extend(predictor.predict_batch(images[start : start + batch], cam=False))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "bench-train" / "mobilenet_v2")
    parser.add_argument("--data", nargs="+", type=Path, default=[SHARED / d for d in DATASETS])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-gate")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results-gate.md")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    from braintumor.data.audit import audit_records
    from braintumor.data.datasets import discover_many
    from braintumor.data.splits import make_split, read_split, write_split
    from braintumor.export.onnx import export_run
    from braintumor.inference.gate import image_statistics
    from braintumor.inference.gate_fit import extract_features, fit_gate
    from braintumor.inference.predictor import Predictor, Rejection
    from braintumor.models.export_dir import GATE_FILE

    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    export = export_run(args.run, args.out / "export")
    split_path = args.out / "split.csv"
    split_sha = write_split(make_split(audit_records(discover_many(args.data)), seed=args.seed), split_path)
    print(f"split {split_path} (sha256 {split_sha[:12]})", flush=True)
    gate = fit_gate(export, args.data, split_path, export / GATE_FILE, threads=args.threads, log=print)
    predictor = Predictor.load(export, threads=args.threads)
    assert predictor.gate is not None, "Predictor.load must pick up gate.npz beside card.json"

    # MRI: the test part (never seen by the gate), and the val part (its calibration set, for reference).
    rows, _ = read_split(split_path)
    roots = {p.resolve().name: p for p in args.data}
    model_train_keys: set[str] = set()
    model_split = args.run.parent / "split.csv"
    if model_split.is_file():
        model_train_keys = {r.key for r in read_split(model_split)[0] if r.split in ("train", "val")}
    seen_groups = {r.group for r in rows if r.key in model_train_keys}
    mri: dict[str, dict[str, Any]] = {}
    for part in ("test", "val"):
        chosen = [r for r in rows if r.split == part]
        images = [load_image(roots[r.dataset] / r.relative_path) for r in chosen]
        t0 = time.perf_counter()
        results = _predict_all(predictor, images)
        seconds = time.perf_counter() - t0
        mri[part] = {"rows": chosen, "results": results, "seconds": seconds, "images": images}
        print(f"MRI {part}: {sum(isinstance(x, Rejection) for x in results)}/{len(results)} rejected", flush=True)
    train_images = [load_image(roots[r.dataset] / r.relative_path) for r in rows if r.split == "train"]
    colour_train = [im for im in train_images if not im.is_gray]
    colourfulness = np.array([image_statistics(im)["colourfulness"] for im in colour_train])
    features = {
        "train": extract_features(export, train_images, threads=args.threads),
        "val": extract_features(export, mri["val"]["images"], threads=args.threads),
        "test": extract_features(export, mri["test"]["images"], threads=args.threads),
    }
    del train_images

    corpus = build_corpus(args.seed)
    corpus_results = _predict_all(predictor, [s.image for s in corpus])
    features["corpus"] = extract_features(export, [s.image for s in corpus], threads=args.threads)
    features["extra"] = extract_features(export, [mri_extra_positive()], threads=args.threads)
    corpus_scores = gate.feature_scores(features["corpus"])
    extra = predictor.predict_batch([mri_extra_positive()], cam=False)[0]
    t0 = time.perf_counter()
    for s in corpus:
        gate.check_image(s.image)
    check_ms = (time.perf_counter() - t0) / len(corpus) * 1000

    # -- write the results ---------------------------------------------------------------------------------
    f = gate.params["features"]
    lines = [
        "# Input gate: is this a brain MRI slice?",
        "",
        f"Command: `.venv/bin/python bench/gate.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` "
        f"({time.perf_counter() - t_start:.0f} s on {platform.machine()}, {os.cpu_count()} cores, CPU only; load "
        f"average {os.getloadavg()[1]:.1f} at the end, so timings below are indicative only).",
        "",
        f"Model: `{args.run.relative_to(ROOT) if args.run.is_relative_to(ROOT) else args.run}` "
        f"({gate.params['source'].get('arch')}, ImageNet-pretrained, trained on brain_tumor_dataset), exported "
        "to ONNX; the gate reads member 0's pooled `features` output. Gate fitted by `fit_gate` on the **train** "
        f"part of a grouped split of {', '.join(roots)} (seed {args.seed}, sha256 {split_sha[:12]}, "
        f"{gate.params['n_fit']} images); feature thresholds at the {f['percentile']}th percentile of the "
        f"**val** part ({f['calibration']}); cosine distance to the nearest of {f['prototypes']} prototypes of the "
        f"{f['dim']}-d L2-normalised features. Statistics bounds: 0.1 % / 99.9 % training quantiles moved by margin "
        f"{gate.params['image']['margin']} towards the natural limit. Nothing was fitted on the test part or on "
        "any non-MRI image.",
        "",
        "## Summary",
        "",
    ]
    n_corpus = len(corpus)
    rejected = [isinstance(r, Rejection) for r in corpus_results]
    test = mri["test"]
    test_rej = [isinstance(r, Rejection) for r in test["results"]]
    lines += [
        "| measure | rate | 95 % interval | goal |",
        "|---|---|---|---|",
        f"| non-MRI images rejected | **{_rate(sum(rejected), n_corpus)}** | {_interval(sum(rejected), n_corpus)} "
        "| ≥ 99 % |",
        f"| real MRI slices wrongly rejected (test part, all datasets) | **{_rate(sum(test_rej), len(test_rej))}** "
        f"| {_interval(sum(test_rej), len(test_rej))} | ≤ 1 % |",
    ]
    fresh = [i for i, r in enumerate(test["rows"]) if r.group not in seen_groups]
    k_fresh = sum(test_rej[i] for i in fresh)
    lines.append(
        "| … test images whose duplicate group the model never trained on | "
        f"{_rate(k_fresh, len(fresh))} | {_interval(k_fresh, len(fresh))} | ≤ 1 % |"
    )
    val_rej = [isinstance(r, Rejection) for r in mri["val"]["results"]]
    lines.append(
        f"| real MRI slices rejected, val part (the calibration set: ≈ {100 - f['percentile']:.1f} % by design) "
        f"| {_rate(sum(val_rej), len(val_rej))} | | |"
    )
    verdict = f"rejected: {extra.reason}" if isinstance(extra, Rejection) else "accepted"
    lines.append(
        "| extra positive: matplotlib's `s1045.ima` (sagittal head MRI, another scanner, never seen) | "
        f"{verdict} | | accepted |"
    )
    lines += ["", "## Real MRI slices (test part of the grouped split), by dataset", ""]
    lines += ["| dataset | test images | wrongly rejected | by statistics | by features |", "|---|---|---|---|---|"]
    by_ds: dict[str, list[Any]] = defaultdict(list)
    for r, res in zip(test["rows"], test["results"], strict=True):
        by_ds[r.dataset].append(res)
    for ds in roots:
        res = by_ds.get(ds, [])
        rej = [x for x in res if isinstance(x, Rejection)]
        by_feat = sum(x.reason.startswith("does not look like") for x in rej)
        lines.append(f"| {ds} | {len(res)} | {_rate(len(rej), len(res))} | {len(rej) - by_feat} | {by_feat} |")
    wrong = [(r.key, x.reason) for r, x in zip(test["rows"], test["results"], strict=True) if isinstance(x, Rejection)]
    if wrong:
        lines += ["", "Wrongly rejected test slices:", ""]
        lines += [f"- `{key}`: {reason}" for key, reason in wrong]
    lines += [
        "",
        f"Throughput of the whole predictor with the gate on the test part: {len(test_rej) / test['seconds']:.0f} "
        f"images/s (batches of 32, no CAM); `check_image` alone: {check_ms:.1f} ms per image.",
        "",
        "## Non-MRI corpus, by kind",
        "",
        "| kind | images | rejected | by DICOM modality | by statistics | by features | lowest feature score |",
        "|---|---|---|---|---|---|---|",
    ]
    kinds: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(corpus):
        kinds[s.kind].append(i)
    for kind, idx in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        reasons = [corpus_results[i].reason for i in idx if isinstance(corpus_results[i], Rejection)]
        dicom = sum(r.startswith("DICOM modality") for r in reasons)
        feat = sum(r.startswith("does not look like") for r in reasons)
        low = min(float(corpus_scores[i]) for i in idx)
        lines.append(
            f"| {kind} | {len(idx)} | {_rate(len(reasons), len(idx))} | {dicom} | {len(reasons) - dicom - feat} "
            f"| {feat} | {low:.2f} |"
        )
    slipped = [s.name for s, r in zip(corpus, rejected, strict=True) if not r]
    lines += ["", f"Slipped through ({len(slipped)}): {', '.join(f'`{n}`' for n in slipped) or 'none'}.", ""]
    order = np.argsort(corpus_scores)[:10]
    lines += [
        '"Feature score" is the feature-space novelty in units of the threshold (> 1 is rejected), computed for '
        "every corpus image even when a cheaper check rejected it first. The ten non-MRI images closest to the "
        "MRI training data in feature space:",
        "",
        ", ".join(f"`{corpus[i].name}` {corpus_scores[i]:.2f}" for i in order),
        "",
        f"Highest feature score among the {len(test_rej)} test MRIs: "
        f"{float(np.max(gate.feature_scores(features['test']))):.2f}.",
        "",
        *_compare_feature_scores(features),
        "",
        "Rejection reasons seen (first of each kind):",
        "",
    ]
    seen: set[str] = set()
    for s, r in zip(corpus, corpus_results, strict=True):
        if isinstance(r, Rejection) and s.kind not in seen:
            seen.add(s.kind)
            lines.append(f"- {s.kind} — `{s.name}`: {r.reason}")
    counts = Counter(s.kind for s in corpus)
    photo_colour = np.array([image_statistics(s.image)["colourfulness"] for s in corpus if s.kind == "photo (colour)"])
    lines += [
        "",
        "## How gray are our MRI datasets?",
        "",
        f"Of {gate.params['n_fit']} training images, {len(colour_train)} decode as colour (channels not all equal; "
        "the rest are gray). Their colourfulness (Hasler & Süsstrunk, 64 px thumbnail): median "
        f"{np.median(colourfulness):.1f}, 99th percentile {np.percentile(colourfulness, 99):.1f}, max "
        f"{colourfulness.max():.1f} (coloured site banners, tinted photographs of film). The gate's colour bound is "
        f"{gate.params['image']['bounds']['colourfulness']:.1f}; the corpus's colour photos score "
        f"{photo_colour.min():.0f}–{photo_colour.max():.0f} (median {np.median(photo_colour):.0f}), so a few "
        "washed-out crops pass this check and are left to the feature check.",
        "",
        "Fitted statistics bounds (training quantiles → bound):",
        "",
        "| statistic | train min | q 0.1 % | q 99.9 % | train max | bound |",
        "|---|---|---|---|---|---|",
    ]
    for name, bound in gate.params["image"]["bounds"].items():
        o = gate.params["image"]["observed"][name]
        lines.append(
            f"| {name} | {o['min']:.3f} | {o['q_low']:.3f} | {o['q_high']:.3f} | {o['max']:.3f} | {bound:.3f} |"
        )
    lines += [
        "",
        "## The corpus",
        "",
        f"{n_corpus} images built in memory by `build_corpus()` in this file "
        f"({', '.join(f'{k} {v}' for k, v in counts.items())}): "
        "scikit-image's bundled images (photos, micrographs, fundus, astronomy, documents, Shepp–Logan phantom, "
        "faces; colour, gray and crops), pydicom's bundled non-MR files (CT, US ×2, NM, SEG, RTDOSE) both as DICOM "
        "and as bare PNG pixels, matplotlib's sample data (grace_hopper.jpg, logos, terrain models, charts from its "
        "stock series), and synthetic blank / uniform / noise / gradient / checkerboard / shapes / text documents / "
        "UI screenshots / crude chest X-rays (PIL + numpy). `skimage.data.brain()` (an MRI, a positive) needs a "
        "download and is not used; matplotlib's `s1045.ima` is an MRI and is counted as a positive above.",
        "",
        "Caveats: the corpus is small and partly synthetic; the margins above (lowest non-MRI feature score vs the "
        "highest test MRI score) say how far from the decision boundary it sits, which matters more than the rate.",
    ]
    args.results.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.results}")
    print(
        json.dumps(
            {"non_mri_rejected": f"{sum(rejected)}/{n_corpus}", "mri_rejected": f"{sum(test_rej)}/{len(test_rej)}"}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
