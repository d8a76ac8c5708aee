"""nonstop.demo."""
