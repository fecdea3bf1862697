"""``braintumor ui`` and ``braintumor app``: the Streamlit UI alone, or the API and the UI together (``make run``)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from braintumor.cli.common import DATA_DIR, HOST, PORT, UI_HOST, UI_PORT, add_model_flag, command
from braintumor.errors import BrainTumorError


def _cmd_ui(args: argparse.Namespace) -> int:
    """start the web UI (Streamlit) for an API started with 'braintumor serve'

    Start the Streamlit UI. It talks to the API over HTTP only (BRAINTUMOR_API_URL or --api-url); sign-in tokens
    stay in the server-side session, never in the URL.
    """
    import importlib.util

    from braintumor.ui import APP_PATH

    if importlib.util.find_spec("streamlit") is None:
        raise BrainTumorError("the web UI needs Streamlit: pip install 'braintumor[ui]'")
    host, port = UI_HOST.value(args.host), UI_PORT.value(args.port)
    env = dict(os.environ)
    if args.api_url:
        env["BRAINTUMOR_API_URL"] = args.api_url
    # from the first page on: no developer menu or deploy button, and never a traceback in the browser
    env.setdefault("STREAMLIT_CLIENT_TOOLBAR_MODE", "viewer")
    env.setdefault("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "none")
    # a study upload may be as large as the API takes one (BRAINTUMOR_MAX_STUDY_MB), not Streamlit's 200 MB
    env.setdefault("STREAMLIT_SERVER_MAX_UPLOAD_SIZE", str(_study_upload_mb(env.get("BRAINTUMOR_MAX_STUDY_MB"))))
    api = env.get("BRAINTUMOR_API_URL", "http://127.0.0.1:8000")
    print(f"braintumor UI on http://{host}:{port} (API: {api})", file=sys.stderr, flush=True)
    options = {"address": host, "port": port, "headless": "true"}
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP_PATH)]
    cmd += [arg for key, value in options.items() for arg in (f"--server.{key}", str(value))]
    cmd += ["--browser.gatherUsageStats", "false"]
    # become Streamlit (no parent left behind): signals from a terminal or a process manager reach it directly
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def _study_upload_mb(value: str | None) -> int:
    """The UI's per-file upload cap in MB: the API's study cap (default 512), rounded up."""
    import math

    try:
        mb = float(value) if value else 512.0
    except ValueError:
        raise BrainTumorError(f"BRAINTUMOR_MAX_STUDY_MB must be a number of MB, got {value!r}") from None
    if not 0 < mb <= 8192:
        raise BrainTumorError(f"BRAINTUMOR_MAX_STUDY_MB must be above 0 and at most 8192, got {value!r}")
    return math.ceil(mb)


def _cmd_app(args: argparse.Namespace) -> int:
    """run the API and the UI together (what 'make run' does)

    Start the API and the UI, wait until both answer, print their URLs; Ctrl-C stops both.
    """
    from braintumor.launcher import run_app

    return run_app(
        host=HOST.value(args.host),
        api_port=PORT.value(args.api_port),
        ui_port=UI_PORT.value(args.ui_port),
        data_dir=DATA_DIR.value(args.data_dir),
        model_dir=args.model,
    )


def add_parser(sub: Any) -> None:
    ui = command(sub, "ui", _cmd_ui)
    UI_HOST.add_to(ui, "--host")
    UI_PORT.add_to(ui, "--port")
    ui.add_argument("--api-url", help="the API's base URL (default: BRAINTUMOR_API_URL or http://127.0.0.1:8000)")

    app = command(sub, "app", _cmd_app)
    HOST.add_to(app, "--host")
    PORT.add_to(app, "--api-port")
    UI_PORT.add_to(app, "--ui-port")
    DATA_DIR.add_to(app, "--data-dir")
    add_model_flag(app)
