"""Inference: ONNX Runtime predictor, ensembles, input gate, batch scoring (no torch)."""
