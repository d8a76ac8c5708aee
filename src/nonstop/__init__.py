"""nonstop: zero-downtime deploys for web services and workers."""

__version__ = "0.1.0"
