"""Loading exported members: each folder's card and an ONNX Runtime session, at the precision asked for.

Why one module: the predictor, the gate fit and the benches all load members the same way — the card read
through :class:`~braintumor.models.export_dir.ExportDir`, the int8 graph where the card recommends it (or where
asked), sessions with the same threads and optimisations — and letterbox a batch the same way before calling the
graph. No torch.

Example:
    >>> member = load_member(ExportDir("exports/mnv2"))  # doctest: +SKIP
    >>> member.card.arch, member.precision  # doctest: +SKIP
    ('mobilenet_v2', 'int8')
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np

from braintumor.errors import ModelLoadError
from braintumor.imaging.transforms import Placement, letterbox_rgb_into
from braintumor.imaging.types import LoadedImage
from braintumor.models.card import PRECISIONS, ModelCard, Precision
from braintumor.models.export_dir import ExportDir


@dataclass
class Member:
    """One exported network and its card, with an ONNX Runtime session (``precision``: the graph loaded)."""

    name: str
    card: ModelCard
    session: Any  # onnxruntime.InferenceSession (untyped package)
    weight: float = 1.0
    precision: Precision = "fp32"

    @property
    def size(self) -> int:
        return self.card.input_size

    @property
    def class_names(self) -> list[str]:
        return list(self.card.class_names)


P = ParamSpec("P")
R = TypeVar("R")


_controller: tuple[int, Any] | None = None


def _blas() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries, taken again when a module was imported since (a library
    loaded later, e.g. torch's own BLAS, would otherwise run unlimited); reused otherwise, so a call costs
    microseconds, not a scan of the loaded libraries."""
    global _controller
    from threadpoolctl import ThreadpoolController

    if _controller is None or _controller[0] != len(sys.modules):
        _controller = (len(sys.modules), ThreadpoolController())
    return _controller[1]


def single_threaded_blas(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with numpy's BLAS on one thread. ONNX Runtime owns the cores while a batch is scored; a
    threaded BLAS call between its runs (the gate's prototype distances, the ensemble's arithmetic) then waits
    for cores its spinning workers hold: 17 ms against 0.3 ms for the gate's distances of one scan on 2 cores.
    The limit costs a few microseconds and is lifted on return."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _blas().limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


def session(path: Path, threads: int | None) -> Any:
    """An ONNX Runtime CPU session for ``path`` (``threads``: intra-op threads, default all cores)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No spin-waiting between runs: on 2 cores the idle workers' spinning took the cores our own work between runs
    # needs (gate, letterbox, heatmaps, decoding children); bench/results-overhead.md has both settings measured.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"cannot load {path}: {str(exc).splitlines()[0][:200]}") from exc


def load_member(
    folder: ExportDir,
    name: str | None = None,
    weight: float = 1.0,
    threads: int | None = None,
    precision: str | None = None,
) -> Member:
    """The member in ``folder``: ``precision`` "fp32" or "int8" (default: what its card recommends; the fp32
    graph when the recommended int8 file is not shipped)."""
    card = folder.read_card()
    wanted = precision or card.default_precision
    if wanted not in PRECISIONS:
        raise ModelLoadError(f"precision must be fp32 or int8, not {wanted!r}")
    chosen: Precision = "int8" if wanted == "int8" else "fp32"
    path = folder.model_file(chosen)
    if not path.is_file():
        if precision is not None:
            raise ModelLoadError(f"{folder.root} has no {chosen} model ({path.name})")
        chosen, path = "fp32", folder.model_file("fp32")
    if not path.is_file():
        raise ModelLoadError(f"{folder.root} has no {path.name}")
    return Member(name or folder.name, card, session(path, threads), weight, chosen)


def load_members(
    root: ExportDir, *, threads: int | None = None, precision: str | None = None, side_by_side: bool = False
) -> list[Member]:
    """Every member of an ensemble folder, or the one export of an export folder (its gate is not loaded).

    ``threads``: intra-op threads of each session (default all cores); with ``side_by_side`` it is the cores of
    all members together, each session getting an equal share (at least one), for members that run at once."""
    dirs = root.member_dirs()
    if side_by_side:
        threads = max(1, (threads or os.cpu_count() or 1) // max(1, len(dirs)))
    return [load_member(folder, m.name, m.weight, threads, precision) for m, folder in dirs]


def runs_side_by_side(threads: int | None, members: int) -> bool:
    """Whether ``members`` graphs should run at once, each on its share of ``threads`` cores (default all), rather
    than one after another on all of them: at batch 1 a small network leaves most of its cores idle between its
    operators (bench/results-overhead.md, "members side by side"), so two networks on one core each finish sooner
    than the two in turn on both. Only when every member can have a core of its own."""
    return members > 1 and (threads or os.cpu_count() or 1) >= members


def preprocess_batch(images: Sequence[LoadedImage], size: int) -> tuple[np.ndarray, list[Placement]]:
    """Letterbox every image to ``size`` and stack as the graph's uint8 NHWC input (each image is written into its
    slot in one pass: no per-image square, RGB copy or stacking)."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    return out, [letterbox_rgb_into(image.pixels, out[k]) for k, image in enumerate(images)]
