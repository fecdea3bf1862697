"""Evaluation: metrics with confidence intervals, calibration, plots and reports."""
