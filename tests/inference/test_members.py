"""Member loading helpers: numpy's BLAS is held to one thread while a batch is scored, and released after."""

from __future__ import annotations

from threadpoolctl import threadpool_info

from braintumor.inference.members import single_threaded_blas


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_blas_runs_on_one_thread_inside_and_as_before_after() -> None:
    before = _blas_threads()
    assert before, "numpy links a BLAS that threadpoolctl can see"

    @single_threaded_blas
    def inside(x: int) -> tuple[int, list[int]]:
        return x + 1, _blas_threads()

    result, threads = inside(1)
    assert result == 2 and set(threads) == {1}
    assert _blas_threads() == before
    assert inside.__name__ == "inside"  # functools.wraps: docs and tracebacks name the real function
