"""nonstop.analysis."""
