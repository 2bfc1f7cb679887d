"""modelwatch: correlate ML prediction latency with resource saturation, from Prometheus and MLflow."""
