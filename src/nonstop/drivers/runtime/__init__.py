"""nonstop.drivers.runtime."""
