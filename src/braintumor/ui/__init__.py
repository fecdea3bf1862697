"""The Streamlit web UI: pages over the HTTP API only (no torch, no onnxruntime, no FastAPI).

Start it with ``braintumor ui`` (or ``streamlit run src/braintumor/ui/app.py``); it talks to the API at
``BRAINTUMOR_API_URL`` (default ``http://127.0.0.1:8000``).
"""

from pathlib import Path

#: The Streamlit entry script (what ``streamlit run`` is given).
APP_PATH = Path(__file__).resolve().parent / "app.py"

__all__ = ["APP_PATH"]
