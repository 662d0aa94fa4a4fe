from tests.deploy.conftest import _no_ssh_agent, device_python, ssh_target, sshd  # noqa: F401  (shared fixtures)
