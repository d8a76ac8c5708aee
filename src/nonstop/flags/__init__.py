"""nonstop.flags."""
