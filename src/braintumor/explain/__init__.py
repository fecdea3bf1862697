"""Explanation: class activation maps (Grad-CAM, Grad-CAM++) and overlays."""
