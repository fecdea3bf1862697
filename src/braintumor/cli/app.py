"""``braintumor ui`` and ``braintumor app``: the Streamlit UI alone, or the API and the UI together (``make run``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from braintumor.cli.common import env_int, env_path, env_str
from braintumor.errors import BrainTumorError


def _cmd_ui(args: argparse.Namespace) -> int:
    import importlib.util

    from braintumor.ui import APP_PATH

    if importlib.util.find_spec("streamlit") is None:
        raise BrainTumorError("the web UI needs Streamlit: pip install 'braintumor[ui]'")
    host = args.host or env_str("BRAINTUMOR_UI_HOST", "127.0.0.1")
    port = args.port if args.port is not None else env_int("BRAINTUMOR_UI_PORT", 8501)
    env = dict(os.environ)
    if args.api_url:
        env["BRAINTUMOR_API_URL"] = args.api_url
    # from the first page on: no developer menu or deploy button, and never a traceback in the browser
    env.setdefault("STREAMLIT_CLIENT_TOOLBAR_MODE", "viewer")
    env.setdefault("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "none")
    api = env.get("BRAINTUMOR_API_URL", "http://127.0.0.1:8000")
    print(f"braintumor UI on http://{host}:{port} (API: {api})", file=sys.stderr, flush=True)
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    # become Streamlit (no parent left behind): signals from a terminal or a process manager reach it directly
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def add_parser(sub: Any) -> None:
    _add_ui_parser(sub)
    _add_app_parser(sub)


def _add_ui_parser(sub: Any) -> None:
    ui = sub.add_parser(
        "ui",
        help="start the web UI (Streamlit) for an API started with 'braintumor serve'",
        description="Start the Streamlit UI. It talks to the API over HTTP only (BRAINTUMOR_API_URL or --api-url); "
        "sign-in tokens stay in the server-side session, never in the URL.",
    )
    ui.add_argument(
        "--host",
        default=None,
        help="address to bind (BRAINTUMOR_UI_HOST; default 127.0.0.1: this machine only)",
    )
    ui.add_argument(
        "--port",
        type=int,
        default=None,
        help="BRAINTUMOR_UI_PORT (default 8501)",
    )
    ui.add_argument("--api-url", help="the API's base URL (default: BRAINTUMOR_API_URL or http://127.0.0.1:8000)")
    ui.set_defaults(func=_cmd_ui)


def _cmd_app(args: argparse.Namespace) -> int:
    from braintumor.launcher import run_app

    return run_app(
        host=args.host or env_str("BRAINTUMOR_HOST", "127.0.0.1"),
        api_port=args.api_port if args.api_port is not None else env_int("BRAINTUMOR_PORT", 8000),
        ui_port=args.ui_port if args.ui_port is not None else env_int("BRAINTUMOR_UI_PORT", 8501),
        data_dir=args.data_dir or env_path("BRAINTUMOR_DATA_DIR", Path("data")),
        model_dir=args.model,
    )


def _add_app_parser(sub: Any) -> None:
    p = sub.add_parser(
        "app",
        help="run the API and the UI together (what 'make run' does)",
        description="Start the API and the UI, wait until both answer, print their URLs; Ctrl-C stops both.",
    )
    p.add_argument("--host", default=None, help="BRAINTUMOR_HOST (default 127.0.0.1)")
    p.add_argument(
        "--api-port",
        type=int,
        default=None,
        help="BRAINTUMOR_PORT (default 8000)",
    )
    p.add_argument(
        "--ui-port",
        type=int,
        default=None,
        help="BRAINTUMOR_UI_PORT (default 8501)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="BRAINTUMOR_DATA_DIR (default ./data)",
    )
    p.add_argument("--model", type=Path, default=None, help="model folder (default: BRAINTUMOR_MODEL_DIR or bundled)")
    p.set_defaults(func=_cmd_app)
