"""nonstop.agent."""
