"""nonstop.migrate."""
