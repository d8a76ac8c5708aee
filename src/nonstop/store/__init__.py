"""nonstop.store."""
