"""The loopback sshd now lives in the library (``pipeline.lab.sshd``) so the farm lab can use it."""

from pipeline.lab.sshd import SSHServer, free_port, keygen, sshd_available  # noqa: F401
