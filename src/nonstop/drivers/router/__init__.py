"""nonstop.drivers.router."""
