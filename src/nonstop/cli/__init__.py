"""The `nonstop` command line: a thin client of the agent's API."""
