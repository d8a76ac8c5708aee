"""nonstop.engine."""
