"""Start the API and the UI together (``braintumor app``, what ``make run`` calls).

Both run as child processes of this one, bound to 127.0.0.1 by default; we wait until each answers its
health URL, print where to go and how to create the first admin, and on Ctrl-C (or if either child dies)
stop both cleanly. Running it again reuses the data directory (accounts, scans, the generated secret).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from braintumor.errors import BrainTumorError


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll ``url`` until it answers 200, the process exits, or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrainTumorError(
                f"{url.rsplit('/', 1)[0]} did not start (exit code {proc.returncode}); see the log above"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise BrainTumorError(f"{url} did not answer within {timeout:.0f} s")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_app(
    *,
    host: str = "127.0.0.1",
    api_port: int = 8000,
    ui_port: int = 8501,
    data_dir: str | Path = "data",
    model_dir: str | Path | None = None,
    startup_timeout: float = 120.0,
) -> int:
    """Run API + UI until interrupted; returns the exit code."""
    exe = [sys.executable, "-m", "braintumor.cli"]
    api_cmd = [*exe, "serve", "--host", host, "--port", str(api_port), "--data-dir", str(data_dir)]
    if model_dir is not None:
        api_cmd += ["--model", str(model_dir)]
    api_url = f"http://{host}:{api_port}"
    ui_cmd = [*exe, "ui", "--host", host, "--port", str(ui_port), "--api-url", api_url]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api = subprocess.Popen(api_cmd)
        procs.append(api)
        wait_for(f"{api_url}/health", api, startup_timeout)
        ui = subprocess.Popen(ui_cmd, env={**os.environ, "BRAINTUMOR_API_URL": api_url})
        procs.append(ui)
        wait_for(f"http://{host}:{ui_port}/_stcore/health", ui, startup_timeout)
        print(
            f"\nBrain Tumor Detection is running (decision support, not a diagnosis).\n"
            f"  UI:  http://{host}:{ui_port}\n"
            f"  API: {api_url}  (docs: {api_url}/docs)\n"
            f"  data: {Path(data_dir).resolve()}\n"
            f"Create the first admin in another terminal:\n"
            f"  braintumor admin create --data-dir {data_dir}\n"
            f"Press Ctrl-C to stop.\n",
            flush=True,
        )
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = next(p for p in procs if p.poll() is not None)
        print(f"braintumor: a service stopped unexpectedly (exit code {dead.returncode}); stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…", file=sys.stderr)
        return 0
    finally:
        _stop(procs)
