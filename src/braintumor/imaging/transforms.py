"""Geometry and channel transforms shared by training, inference and explanation.

:func:`letterbox` is the seed's resize: keep the aspect ratio, pad with black, so a round skull is not
squashed into an oval. It returns a :class:`Placement` that maps anything computed on the square model
input (a Grad-CAM map) back onto the original image. :func:`letterbox_rgb_into` is the same resize written
straight into a batch's slot as the three channels a graph takes, so serving resizes, pads and expands each scan
in one pass instead of three (letterbox, ``to_rgb``, copy into the batch), with the same bytes.

Example:
    >>> import numpy as np
    >>> boxed, placement = letterbox(np.full((100, 200), 255, np.uint8), 224)
    >>> boxed.shape, placement.content_box
    ((224, 224), (0, 56, 224, 112))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Placement:
    """Where the original image sits inside the letterboxed square.

    ``content_box`` is ``(left, top, width, height)`` in model-input pixels; ``original_size`` is the
    source's ``(width, height)``.
    """

    size: int
    original_size: tuple[int, int]
    content_box: tuple[int, int, int, int]

    @property
    def scale(self) -> float:
        return self.content_box[2] / self.original_size[0]

    def unmap(self, square_map: np.ndarray) -> np.ndarray:
        """Crop the padding off a ``(size, size)`` float map and resize it to the original image size.

        >>> p = Placement(224, (200, 100), (0, 56, 224, 112))
        >>> p.unmap(np.zeros((224, 224), np.float32)).shape
        (100, 200)
        """
        crop = np.ascontiguousarray(self.crop(square_map), dtype=np.float32)
        return resize_float(crop, self.original_size)

    def crop(self, square_map: np.ndarray) -> np.ndarray:
        """The part of a ``(size, size)`` map that covers the image (a view): what :meth:`unmap` resizes, so
        per-pixel work done before unmapping can skip the padding.

        >>> Placement(224, (200, 100), (0, 56, 224, 112)).crop(np.zeros((224, 224))).shape
        (112, 224)
        """
        if square_map.shape[:2] != (self.size, self.size):
            raise ValueError(f"expected a {self.size}×{self.size} map, got {square_map.shape[:2]}")
        left, top, width, height = self.content_box
        return square_map[top : top + height, left : left + width]


def letterbox(
    pixels: np.ndarray, size: int, *, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> tuple[np.ndarray, Placement]:
    """Resize ``pixels`` (``(H, W)`` or ``(H, W, C)`` uint8) to fit ``size``×``size``, padding with black.

    The longer side becomes ``size``; the image is centred, and odd padding goes to the right/bottom.
    """
    placement = _placement(pixels, size)
    left, top, new_w, new_h = placement.content_box
    out = np.zeros((size, size, *pixels.shape[2:]), dtype=pixels.dtype)
    out[top : top + new_h, left : left + new_w] = _resized(pixels, placement, resample)
    return out, placement


def letterbox_rgb_into(
    pixels: np.ndarray, out: np.ndarray, *, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> Placement:
    """``to_rgb(letterbox(pixels, size)[0])`` written into ``out`` (``(size, size, 3)``, e.g. one slot of a batch):
    the resized content once, black padding around it, gray broadcast to the three channels on the way.

    >>> out = np.empty((224, 224, 3), np.uint8)
    >>> letterbox_rgb_into(np.full((100, 200), 255, np.uint8), out).content_box, int(out[0, 0, 0]), int(out[112, 0, 2])
    ((0, 56, 224, 112), 0, 255)
    """
    size = out.shape[0]
    if out.shape != (size, size, 3):
        raise ValueError(f"expected a (size, size, 3) output, got shape {out.shape}")
    placement = _placement(pixels, size)
    if not (pixels.ndim == 2 or pixels.shape[2] in (1, 3)):
        raise ValueError(f"expected (H, W), (H, W, 1) or (H, W, 3), got shape {pixels.shape}")
    left, top, new_w, new_h = placement.content_box
    resized = _resized(pixels, placement, resample)
    out[:top] = 0
    out[top + new_h :] = 0
    out[top : top + new_h, :left] = 0
    out[top : top + new_h, left + new_w :] = 0
    content = out[top : top + new_h, left : left + new_w]
    if resized.ndim == 3 and resized.shape[2] == 3:
        content[...] = resized
    else:  # gray: one strided copy a channel is 3× faster than numpy's broadcast over a length-3 axis
        gray = resized.reshape(resized.shape[:2])
        for channel in range(3):
            content[:, :, channel] = gray
    return placement


def _placement(pixels: np.ndarray, size: int) -> Placement:
    """Where ``pixels`` go in the ``size`` square: the longer side fills it, centred, odd padding right/bottom."""
    if pixels.ndim not in (2, 3) or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"expected a non-empty (H, W) or (H, W, C) image, got shape {pixels.shape}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    height, width = pixels.shape[:2]
    scale = size / max(width, height)
    new_w = max(1, min(size, round(width * scale)))
    new_h = max(1, min(size, round(height * scale)))
    left, top = (size - new_w) // 2, (size - new_h) // 2
    return Placement(size=size, original_size=(width, height), content_box=(left, top, new_w, new_h))


def _resized(pixels: np.ndarray, placement: Placement, resample: Image.Resampling) -> np.ndarray:
    new_w, new_h = placement.content_box[2:]
    if (new_w, new_h) == placement.original_size:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((new_w, new_h), resample=resample))


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """Return an ``(H, W, 3)`` uint8 array: gray MRI is repeated into the three channels backbones expect.

    This is the single place where gray becomes RGB.
    """
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return pixels
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    raise ValueError(f"expected (H, W), (H, W, 1) or (H, W, 3), got shape {pixels.shape}")


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """Return ``(H, W)`` uint8 luminance (ITU-R 601-2, as PIL's ``convert("L")``)."""
    if pixels.ndim == 2:
        return pixels
    return np.asarray(Image.fromarray(to_rgb(pixels)).convert("L"))


def resize_float(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to ``size`` = ``(width, height)``."""
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {values.shape}")
    if (values.shape[1], values.shape[0]) == size:
        return values.astype(np.float32, copy=False)
    image = Image.fromarray(values.astype(np.float32, copy=False), mode="F")
    return np.asarray(image.resize(size, resample=Image.Resampling.BILINEAR), dtype=np.float32)
