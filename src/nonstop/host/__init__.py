"""nonstop.host: running on a server - the systemd unit and the host checks of `nonstop doctor`."""
