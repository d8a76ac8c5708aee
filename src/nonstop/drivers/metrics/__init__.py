"""nonstop.drivers.metrics: per-release measurements from the router's request stream."""

from nonstop.drivers.metrics.prometheus import register_request_metrics
from nonstop.drivers.metrics.request_stats import UNKNOWN, UNROUTED, RequestStats

__all__ = ["UNKNOWN", "UNROUTED", "RequestStats", "register_request_metrics"]
