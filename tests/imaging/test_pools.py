"""Shared thread pools: one per name and size in a process, a fresh one in a forked child."""

from __future__ import annotations

import multiprocessing
import threading

from braintumor.imaging.pools import thread_pool


def test_a_pool_is_made_once_and_its_threads_carry_its_name() -> None:
    pool = thread_pool("test-pool", 2)
    assert thread_pool("test-pool", 2) is pool and thread_pool("test-pool", 3) is not pool
    assert pool.submit(lambda: threading.current_thread().name).result().startswith("test-pool")


def _child_pool_works(conn: object) -> None:
    # the parent's pool object came along with the fork, its threads did not: the child must get its own
    result = thread_pool("test-fork", 1).submit(sum, [1, 2, 3]).result(timeout=10)
    conn.send(result)  # type: ignore[attr-defined]


def test_a_forked_child_gets_a_pool_of_its_own() -> None:
    thread_pool("test-fork", 1).submit(int).result()  # the parent's one thread has started
    receiver, sender = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_child_pool_works, args=(sender,))
    child.start()
    assert receiver.poll(20) and receiver.recv() == 6
    child.join(10)
    assert child.exitcode == 0
