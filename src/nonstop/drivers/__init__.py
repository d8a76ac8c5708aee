"""nonstop.drivers."""
