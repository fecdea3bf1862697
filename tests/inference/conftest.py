"""Inference fixtures: the bundled default model, loaded once for the gate and study tests."""

from __future__ import annotations

import pytest

from braintumor.inference.predictor import Predictor


@pytest.fixture(scope="session")
def bundled() -> Predictor:
    """The bundled ensemble on one ONNX Runtime thread; skips where the installation carries none."""
    from braintumor.inference.bundled import bundled_model_dir

    found = bundled_model_dir()
    if found is None:
        pytest.skip("this installation carries no bundled model")
    return Predictor.load(found, threads=1)
