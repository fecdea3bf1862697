"""Geometry and channel transforms shared by training, inference and explanation.

:func:`letterbox` is the seed's resize: keep the aspect ratio, pad with black, so a round skull is not
squashed into an oval. It returns a :class:`Placement` that maps anything computed on the square model
input (a Grad-CAM map) back onto the original image.

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
        if square_map.shape[:2] != (self.size, self.size):
            raise ValueError(f"expected a {self.size}×{self.size} map, got {square_map.shape[:2]}")
        left, top, width, height = self.content_box
        crop = np.ascontiguousarray(square_map[top : top + height, left : left + width], dtype=np.float32)
        return resize_float(crop, self.original_size)


def letterbox(
    pixels: np.ndarray, size: int, *, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> tuple[np.ndarray, Placement]:
    """Resize ``pixels`` (``(H, W)`` or ``(H, W, C)`` uint8) to fit ``size``×``size``, padding with black.

    The longer side becomes ``size``; the image is centred, and odd padding goes to the right/bottom.
    """
    if pixels.ndim not in (2, 3) or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"expected a non-empty (H, W) or (H, W, C) image, got shape {pixels.shape}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    height, width = pixels.shape[:2]
    scale = size / max(width, height)
    new_w = max(1, min(size, round(width * scale)))
    new_h = max(1, min(size, round(height * scale)))
    left, top = (size - new_w) // 2, (size - new_h) // 2
    if (new_w, new_h) == (width, height):
        resized = pixels
    else:
        resized = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), resample=resample))
    out = np.zeros((size, size, *pixels.shape[2:]), dtype=pixels.dtype)
    out[top : top + new_h, left : left + new_w] = resized
    return out, Placement(size=size, original_size=(width, height), content_box=(left, top, new_w, new_h))


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
