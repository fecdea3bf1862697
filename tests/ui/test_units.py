"""The UI's parts that need no server: import isolation, the ``braintumor ui`` command, error messages from
API answers, and the image helpers."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from braintumor.cli import main
from braintumor.imaging.io import sniff_format
from braintumor.imaging.overlay import JET
from braintumor.imaging.transforms import to_rgb
from braintumor.ui import APP_PATH, imaging
from braintumor.ui.client import ApiClient, ApiError, describe


def test_the_ui_imports_no_ml_storage_or_server_code() -> None:
    """The UI installs without torch, onnxruntime or FastAPI: importing the app pulls in its own code and the
    imaging core (with the errors it raises), nothing else of the package."""
    code = (
        "import sys; import braintumor.ui.app; "
        "allowed = ('braintumor.ui', 'braintumor.imaging', 'braintumor.errors'); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime', 'fastapi', "
        "'onnx', 'timm', 'torchvision') or (m.startswith('braintumor.') and not m.startswith(allowed))); "
        "print(bad); assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ui_command_becomes_streamlit_with_the_api_url(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, list(argv), dict(env))))
    assert main(["ui", "--host", "0.0.0.0", "--port", "8599", "--api-url", "http://api.local:9000"]) == 0
    path, cmd, env = calls[0]
    assert path == sys.executable
    assert cmd == [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.address", "0.0.0.0", "--server.port", "8599",
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    assert env["BRAINTUMOR_API_URL"] == "http://api.local:9000"
    assert env["STREAMLIT_CLIENT_TOOLBAR_MODE"] == "viewer" and env["STREAMLIT_CLIENT_SHOW_ERROR_DETAILS"] == "none"
    monkeypatch.setenv("BRAINTUMOR_API_URL", "http://from-env:1")
    assert main(["ui"]) == 0
    _, cmd, env = calls[1]
    assert cmd[cmd.index("--server.port") + 1] == "8501" and cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert env["BRAINTUMOR_API_URL"] == "http://from-env:1"


# -- messages from API answers ---------------------------------------------------------------------------
def answer(status: int, body: Any = None, headers: dict[str, str] | None = None, text: str | None = None) -> Any:
    request = httpx.Request("GET", "http://api/x")
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


def test_server_reasons_become_sentences() -> None:
    err = describe(answer(404, {"detail": "scan not found", "request_id": "abc"}))
    assert (err.status, err.message, err.request_id) == (404, "Scan not found", "abc")
    err = describe(
        answer(422, {"detail": [{"loc": ["body", "username"], "msg": "String should match pattern", "type": "x"}]})
    )
    assert err.message.startswith("The username must be 3–32 letters")
    err = describe(answer(422, {"detail": [{"loc": ["query", "page"], "msg": "must be ≥ 1", "type": "x"}]}))
    assert err.message == "Page: must be ≥ 1"
    err = describe(answer(429, {"detail": "too many requests from this address"}, {"Retry-After": "7"}))
    assert err.message == "Too many requests from this address (try again in about 7 s)"
    # a message that already says when is not followed by the wait again (issue 14 item 7)
    said = {"detail": "too many failed attempts for this account; try again in about 15 minutes"}
    err = describe(answer(429, said, {"Retry-After": "899"}))
    assert err.message == "Too many failed attempts for this account; try again in about 15 minutes"
    err = describe(answer(422, {"detail": "an MR image outside …", "code": "out_of_scope"}))
    assert err.code == "out_of_scope"
    err = describe(answer(502, text="<html>bad gateway</html>"))
    assert err.message == "The server answered 502 Bad Gateway" and "<html>" not in err.message


def test_transport_failures_are_api_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    api = ApiClient(
        "http://api.test", "tok", http=httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(refuse))
    )
    with pytest.raises(ApiError) as caught:
        api.history()
    assert caught.value.status == 0 and "Cannot reach the analysis server at http://api.test" in caught.value.message
    assert "tok" not in repr(api)
    with pytest.raises(ApiError, match="Please sign in first") as caught:
        api.with_token(None).me()
    assert caught.value.unauthorized


# -- images ----------------------------------------------------------------------------------------------
def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, "PNG")
    return buf.getvalue()


def test_decode_gray_rgba_and_16_bit() -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert np.array_equal(imaging.decode(png(gray)), gray)
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = rgba[..., 3] = 255  # opaque red: colour survives the reader's gray collapse
    assert imaging.decode(png(rgba)).shape == (4, 6, 3)
    deep = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    shown = imaging.decode(png(deep))
    assert shown.dtype == np.uint8 and shown.min() == 0 and shown.max() == 255
    with pytest.raises(imaging.DisplayError):
        imaging.decode(b"not an image")


def test_decode_dicom_for_display() -> None:
    data = Path(str(get_testdata_file("MR_small.dcm"))).read_bytes()
    assert sniff_format(data[:256]) == "dicom"
    shown = imaging.decode(data)
    assert shown.shape == (64, 64) and shown.dtype == np.uint8 and shown.max() == 255
    with pytest.raises(imaging.DisplayError):
        imaging.decode(data[:200] + b"\0" * 10)


def test_zoom_crops_around_the_centre_and_stays_inside() -> None:
    pixels = np.zeros((100, 200), np.uint8)
    assert imaging.view(pixels, 1.0, (0.5, 0.5)).shape == (100, 200)
    assert imaging.view(pixels, 4.0, (0.5, 0.5)).shape == (25, 50)
    pixels[0, 199] = 255
    corner = imaging.view(pixels, 4.0, (1.0, 0.0))  # pushed against the top-right edge
    assert corner[0, -1] == 255
    assert imaging.enlarge(corner, 400).size == (400, 200)


def test_opacity_zero_shows_the_scan_and_heatmap_is_jet() -> None:
    scan = np.full((10, 10), 100, np.uint8)
    cam = np.ones((5, 5), np.float32)
    assert np.array_equal(imaging.blend(scan, cam, 0.0), to_rgb(scan))
    assert tuple(imaging.heatmap(scan, cam)[0, 0]) == tuple(JET[255])
    buf = io.BytesIO()
    np.save(buf, cam.astype(np.float16))
    assert imaging.load_cam(buf.getvalue()).dtype == np.float32
    with pytest.raises(imaging.DisplayError):
        imaging.load_cam(b"junk")
