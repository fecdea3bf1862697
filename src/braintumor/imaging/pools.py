"""Thread pools shared by name, made on first use and again in a forked copy of the process.

Why: numpy, Pillow's codecs and ONNX Runtime release the GIL in their heavy parts, so a few threads let one
request use the cores its single Python thread leaves idle — the ensemble's members side by side
(:meth:`~braintumor.inference.predictor.Predictor.run_members`), an upload's PNGs encoded at once
(:func:`braintumor.api.analysis.render_all`). A pool made per call would pay for starting its threads each time;
one kept per process does not, and a pool's threads do not survive a fork, so a forked child makes its own.

Example:
    >>> thread_pool("doc", 2).submit(sum, [1, 2]).result()
    3
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_pools: dict[tuple[str, int], tuple[int, ThreadPoolExecutor]] = {}
_lock = threading.Lock()


def thread_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """The pool ``name`` of ``workers`` threads of this process (its threads are named after it)."""
    key = (name, max(1, workers))
    with _lock:
        kept = _pools.get(key)
        if kept is None or kept[0] != os.getpid():
            kept = _pools[key] = (os.getpid(), ThreadPoolExecutor(max_workers=key[1], thread_name_prefix=name))
        return kept[1]
