"""The isolated runner: a result or the call's typed error comes back; a slow, greedy or crashing call is stopped
and reported as a typed error, and the child never outlives the call."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from braintumor.errors import CorruptImageError, DecodeLimitError
from braintumor.imaging import untrusted
from braintumor.imaging.io import load_image
from braintumor.imaging.untrusted import run_isolated


def _children() -> set[int]:
    """Live children of this process (the fork server is a child too, and stays)."""
    path = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def test_result_and_typed_errors_come_back() -> None:
    data = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    isolated = run_isolated(load_image, data, timeout_s=60, memory_mb=1024)
    assert np.array_equal(isolated.pixels, load_image(data).pixels)
    with pytest.raises(CorruptImageError, match="damaged PNG header"):
        run_isolated(load_image, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, timeout_s=60)


def test_a_call_past_its_deadline_is_killed() -> None:
    run_isolated(time.sleep, 0, timeout_s=60)  # start the fork server (importing ``time``) outside the timed part
    before = _children()
    start = time.perf_counter()
    with pytest.raises(DecodeLimitError, match=r"longer than 0\.5 s"):
        run_isolated(time.sleep, 30, timeout_s=0.5)
    assert time.perf_counter() - start < 5
    assert _children() <= before  # the sleeping child is gone


def test_a_call_past_its_memory_budget_is_stopped() -> None:
    with pytest.raises(DecodeLimitError, match="more than 256 MB"):
        run_isolated(bytearray, 2 * 1024**3, timeout_s=60, memory_mb=256)


def test_a_crashing_call_is_a_typed_error() -> None:
    with pytest.raises(CorruptImageError, match="stopped abnormally"):
        run_isolated(os.abort, timeout_s=60)
    with pytest.raises(CorruptImageError, match="cannot decode this file"):
        run_isolated(int, "not a number", timeout_s=60)  # an untyped error is not passed on as it is


def _imported(name: str) -> bool:
    return name in sys.modules


def test_a_module_a_later_caller_preloads_is_in_its_children_from_the_start() -> None:
    """The fork server is started by the first caller; one that asks for more (another route's modules) gets a
    server that imports them too, so its children do not import them again on every call."""
    assert not run_isolated(_imported, "wave", timeout_s=60)
    assert run_isolated(_imported, "wave", timeout_s=60, preload=("wave",))
    assert run_isolated(_imported, "wave", timeout_s=60)  # what was asked once stays preloaded


def test_every_call_gets_a_process_of_its_own() -> None:
    # a spare child waits for the next call, but no two calls (no two untrusted files) ever share a process
    pids = [run_isolated(os.getpid, timeout_s=60) for _ in range(4)]
    assert len(set(pids)) == 4 and os.getpid() not in pids
    time.sleep(0.5)  # the spare for a next call has started by now
    assert run_isolated(os.getpid, timeout_s=60) not in pids


def test_a_spare_that_died_while_it_waited_is_replaced() -> None:
    run_isolated(int, "1", timeout_s=60)  # leaves a spare starting for the next call
    deadline = time.monotonic() + 30
    while not untrusted._spares and time.monotonic() < deadline:
        time.sleep(0.05)
    assert untrusted._spares, "no spare decoder was started"
    untrusted._spares[0].process.kill()  # dead before its call (whether noticed at take or at hand-over)
    assert run_isolated(int, "7", timeout_s=60) == 7
