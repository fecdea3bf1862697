"""Real servers for the tests: start a process, poll until it answers, stop it — one home for all of them.

SecantusDB (the MongoDB backend tests), ``braintumor serve`` and the Streamlit UI (the browser tests) all start
the same way: a subprocess writing to a log file, polled on a health check until it answers or dies, and
terminated (then killed) at the end. Imported relatively (``from ..servers import serving``).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (servers in tests bind loopback only)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness check: ``url`` answers 200."""
    import httpx

    def check() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Terminate ``proc``, and kill it when it has not exited after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def serving(
    cmd: Sequence[str],
    *,
    log: Path,
    ready: Callable[[], bool],
    what: str,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` (output to ``log``) until ``ready()`` is true, yield the process, stop it on exit.

    Fails with the log's tail when the process exits or ``timeout`` seconds pass before it is ready.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(list(cmd), env=None if env is None else dict(env), stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        stop(proc)
