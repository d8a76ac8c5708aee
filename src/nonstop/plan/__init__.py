"""nonstop.plan."""
