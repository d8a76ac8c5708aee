"""nonstop.drivers.metrics."""
