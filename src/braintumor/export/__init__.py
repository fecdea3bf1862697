"""Export: trained runs to ONNX (in-graph calibration and Grad-CAM) and static int8 quantization."""
