"""Many hosts: the same strategies across a fleet of machines reached over SSH (docs/fleet.md).

- ``nonstop.config.fleet``: the ``[fleet]`` table (hosts, roles, the front).
- ``plan``: the pure fleet planner (host batches, canary host, lockstep blue-green).
- ``ssh``: hosts over SSH (asyncssh): verified host keys, commands, the agent's socket forwarded.
- ``bootstrap``: a wheel of nonstop copied to a host, installed in a venv, its agent started.
"""
