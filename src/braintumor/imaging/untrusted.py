"""Run the parsing of untrusted bytes in a child process with a deadline and a memory ceiling.

Why: header checks (:class:`~braintumor.imaging.types.ImageLimits`) bound what a file *declares*, but a decoder can
still spend unbounded time or memory on what it *contains* (a progressive JPEG with thousands of scans, a bug in a C
decoder). A thread cannot be stopped; a process can. :func:`run_isolated` runs one call in a process forked from a
clean, single-threaded fork server (``multiprocessing`` "forkserver", with the decoders imported once), under an
address-space limit (``RLIMIT_AS``), and kills it at the deadline. The caller gets the result, the call's own typed
error, or a typed error saying which budget ran out — never a hung worker, a half-written result or a crashed
server.

The cost is a process per call and pickling the input and the result. The process is started ahead of need (one
spare child waits for the next call, see :class:`_Spare`), so a call pays mostly the pickling.

Example:
    >>> from braintumor.imaging.io import load_image
    >>> image = run_isolated(load_image, b"...", timeout_s=10, memory_mb=1024)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from braintumor.errors import BrainTumorError, CorruptImageError, DecodeLimitError
from braintumor.imaging.pools import thread_pool

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Imported once in the fork server, so that each child starts with the decoders loaded. ``__main__`` (the
#: program's own script, multiprocessing's default) stays on the list: without it every child imports the
#: program again before it decodes a byte (about a third of an isolated decode's time, measured on 2 cores).
PRELOAD = (
    "__main__",
    "numpy",
    "PIL.Image",
    "PIL.PngImagePlugin",
    "PIL.JpegImagePlugin",
    # the rest of what ``Image.open`` loads first (its ``preinit``) and TIFF, which the API also reads
    "PIL.BmpImagePlugin",
    "PIL.GifImagePlugin",
    "PIL.PpmImagePlugin",
    "PIL.TiffImagePlugin",
    "pydicom",
    "braintumor.imaging.io",
)
_context_lock = threading.RLock()  # also held while a child starts: the fork server is not swapped under a start
_context: Any = None
_preloaded: tuple[str, ...] = ()


def _forkserver(extra_preload: tuple[str, ...]) -> Any:
    """The fork server's context, its server importing ``PRELOAD`` and ``extra_preload``. A caller needing a module
    the running server did not import (another route's pipeline: each child would import it again, a second and
    more for the API's modules) restarts it with everything asked so far; spares forked from the old server are
    stopped. Children already running are independent processes and finish their calls."""
    global _context, _preloaded
    wanted = tuple(dict.fromkeys((*PRELOAD, *extra_preload)))
    with _context_lock:
        if _context is None:
            _context = multiprocessing.get_context("forkserver")
        if not set(wanted) <= set(_preloaded):
            if _preloaded:
                _stop_forkserver()
            _preloaded = tuple(dict.fromkeys((*_preloaded, *wanted)))
            _context.set_forkserver_preload(list(_preloaded))
        return _context


def _stop_forkserver() -> None:
    """Stop the running fork server (the next start launches one with the new preload) and the spares it forked.

    The server is killed first: ``ForkServer._stop`` (the standard library's own, used by its tests) closes the
    server's "alive" pipe and waits for it to exit, and a server whose preloaded modules left a thread running
    would never exit by itself; killed, it is reaped at once. It holds nothing worth a graceful stop."""
    from multiprocessing import forkserver

    with _spares_lock:
        stale = list(_spares)
        _spares.clear()
    for spare in stale:
        spare.stop(wait=False)
    server: Any = forkserver._forkserver
    pid = getattr(server, "_forkserver_pid", None)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server._stop()  # private, present since Python 3.8


def imported_modules(names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` the calling process has imported. Run in a child (``run_isolated(imported_modules,
    names, …)``) it tells what the fork server preloaded for its children: the check that no call imports a
    route's decoder modules again."""
    import sys

    return [name for name in names if name in sys.modules]


def restart_forkserver() -> None:
    """Stop the fork server and forget what it preloaded: the next call starts a fresh one importing ``PRELOAD``
    and what that call asks for (the state of a process that has not decoded yet)."""
    global _preloaded
    with _context_lock:
        if _preloaded:
            _stop_forkserver()
        _preloaded = ()


def run_isolated(
    func: Callable[..., T],
    *args: Any,
    timeout_s: float,
    memory_mb: int | None = None,
    preload: tuple[str, ...] = (),
) -> T:
    """``func(*args)`` in a child process; ``func`` must be importable by name (a module-level function).

    Raises what ``func`` raised when that is a :class:`~braintumor.errors.BrainTumorError`;
    :class:`~braintumor.errors.DecodeLimitError` when the call ran past ``timeout_s`` or needed more than
    ``memory_mb`` MiB beyond what the child started with; :class:`~braintumor.errors.CorruptImageError` when the
    child died or ``func`` raised anything else (the details go to the server log, not to the client).
    """
    ctx = _forkserver((*preload, func.__module__))
    deadline = time.monotonic() + timeout_s
    child = _hand_over(ctx, (func, args, memory_mb), deadline, timeout_s)
    _replenish(ctx)
    receiver = child.results
    try:
        if not receiver.poll(max(0.0, deadline - time.monotonic())):
            raise DecodeLimitError(f"decoding took longer than {timeout_s:g} s (the limit); the file was not processed")
        try:
            status, payload = receiver.recv()
        except (EOFError, OSError):
            child.process.join(5)
            log.error("isolated %s died with exit code %s", getattr(func, "__name__", func), child.process.exitcode)
            raise CorruptImageError("cannot decode this file: the decoder stopped abnormally") from None
    finally:
        child.stop(wait=False)
    if status == "ok":
        result: T = payload
        return result
    if status == "error":
        raise payload
    if status == "memory":
        raise DecodeLimitError(f"decoding needed more than {memory_mb} MB (the limit); the file was not processed")
    log.error("isolated %s raised %s", getattr(func, "__name__", func), payload)
    raise CorruptImageError("cannot decode this file")


def start_ahead(funcs: tuple[Callable[..., Any], ...], preload: tuple[str, ...] = ()) -> None:
    """Start the fork server importing ``preload`` and the modules of ``funcs`` (everything the calls to come will
    need), and a spare child, in kept threads: the first isolated call then finds both ready instead of paying
    the server's start-up (a second or more on 2 cores) and, where the callers differ, its restart. Returns at
    once; the API calls it when it starts."""
    _replenish(_forkserver((*preload, *(f.__module__ for f in funcs))))


def _hand_over(
    ctx: Any, job: tuple[Callable[..., Any], tuple[Any, ...], int | None], deadline: float, timeout_s: float
) -> _Spare:
    """Give ``job`` to a spare and wait until it says it took it; to a child started for it instead when the spare
    died while it waited (the job never ran, so another child may run it). A child that cannot take the job either
    is a decoder failure, a typed error."""
    child = _take_spare(ctx)
    for attempt in range(2):
        try:
            child.jobs.send(job)
            if not child.results.poll(max(0.0, deadline - time.monotonic())):
                child.stop(wait=False)
                raise DecodeLimitError(
                    f"decoding took longer than {timeout_s:g} s (the limit); the file was not processed"
                )
            if child.results.recv() == _TAKEN:
                return child
        except (EOFError, OSError):  # BrokenPipeError among them: the child is gone
            pass
        child.stop()
        if attempt == 0:
            child = _Spare.start(ctx)
    log.error("no isolated decoder could take %s", getattr(job[0], "__name__", job[0]))
    raise CorruptImageError("cannot decode this file: the decoder stopped abnormally")


#: What a child answers once it holds its job: before it, the child's death means the job never ran.
_TAKEN = ("taken", None)


@dataclass
class _Spare:
    """A child started ahead of need, waiting for its one call: starting a process (the fork server's round trip,
    the fork, the child's start-up) is most of an isolated decode's time for a scan-sized file, and a spare takes
    it off the request. Each child still runs exactly one call and is then stopped: no untrusted file ever
    shares a process with another."""

    process: Any
    jobs: Connection
    results: Connection

    @classmethod
    def start(cls, ctx: Any) -> _Spare:
        job_receiver, job_sender = ctx.Pipe(duplex=False)
        result_receiver, result_sender = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_waiting_child, args=(job_receiver, result_sender), daemon=True)
        with _context_lock:
            process.start()
        job_receiver.close()
        result_sender.close()
        return cls(process, job_sender, result_receiver)

    def stop(self, *, wait: bool = True) -> None:
        """Kill the child now; collect its exit status now or (``wait=False``) in a kept thread, off the caller's
        path: the kill is what matters, the status is only bookkeeping (a round trip through the fork server)."""
        for conn in (self.jobs, self.results):
            conn.close()
        if self.process.is_alive():
            self.process.kill()
        if wait:
            self.process.join(5)
        else:
            thread_pool("reap-decoder", 1).submit(self.process.join, 5)


#: Children kept started and waiting (one: the API runs at most a few decodes at once, and a call that finds
#: no spare starts its own child as before).
SPARES = 1
_spares: list[_Spare] = []
_spares_lock = threading.Lock()
_spare_pid = os.getpid()  # spares belong to the process that started them (not to a forked copy of it)


def _take_spare(ctx: Any) -> _Spare:
    global _spare_pid
    with _spares_lock:
        if _spare_pid != os.getpid():
            _spares.clear()
            _spare_pid = os.getpid()
        while _spares:
            spare = _spares.pop()
            if spare.process.is_alive():
                return spare
            spare.stop()
    return _Spare.start(ctx)


def _replenish(ctx: Any) -> None:
    """Start a spare for the next call, off the caller's path (a kept thread: starting a child mostly waits, and
    handing the work to a thread that already runs costs the caller microseconds, starting one milliseconds)."""

    def start() -> None:
        with _spares_lock:
            if len(_spares) >= SPARES or _spare_pid != os.getpid():
                return
        spare = _Spare.start(ctx)
        with _spares_lock:
            if len(_spares) < SPARES:
                _spares.append(spare)
                return
        spare.stop()

    thread_pool("spare-decoder", 1).submit(start)


def _warm_up() -> None:
    """Decode a tiny PNG and JPEG once. The first decode in a fresh process pays Pillow's start-up (registering
    its plugins, the codecs' first use), several times what the next decode costs; a spare pays it while it waits,
    not during the call it serves (the refused-upload row of ``bench/api_latency.py`` measures the whole path)."""
    import io

    import numpy as np
    from PIL import Image

    from braintumor.imaging.io import load_image

    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, fmt)
        load_image(buf.getvalue())


def _waiting_child(jobs: Connection, sender: Connection) -> None:
    try:
        _warm_up()
    except Exception:  # a warm-up is an optimisation: the call it precedes reports any real problem
        log.debug("spare warm-up failed", exc_info=True)
    try:
        func, args, memory_mb = jobs.recv()
    except (EOFError, OSError):  # the parent went away (or stopped this spare) before a call came
        return
    finally:
        jobs.close()
    sender.send(_TAKEN)
    _child(sender, func, args, memory_mb)


def _child(sender: Connection, func: Callable[..., Any], args: tuple[Any, ...], memory_mb: int | None) -> None:
    if memory_mb is not None:
        # The budget counts from what the child already maps (interpreter, numpy, decoders).
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = mapped + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        message: tuple[str, Any] = ("ok", func(*args))
    except MemoryError:
        message = ("memory", None)
    except BrainTumorError as exc:
        message = ("error", exc)
    except BaseException as exc:  # anything else, a native extension's panic included, is reported, not raised
        message = ("crash", f"{type(exc).__name__}: {str(exc)[:300]}")
    try:
        sender.send(message)
    except MemoryError:
        sender.send(("memory", None))
    finally:
        sender.close()
