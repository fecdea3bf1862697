"""Training: config, data pipeline, callbacks and the two-phase transfer-learning loop."""
