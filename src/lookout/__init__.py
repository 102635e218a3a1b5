"""lookout: anomaly alerts and per-minute analytics from NGINX access-log streams."""

__version__ = "0.1.0"
