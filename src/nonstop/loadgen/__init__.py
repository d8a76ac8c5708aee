"""nonstop.loadgen."""
