"""The device agent's exit codes, named once on the host (the agent defines them in ``agent.py``).

``tests/deploy/test_exit_codes.py`` checks that these match the agent's ``EXIT_*`` constants.
"""

from __future__ import annotations

import enum


class AgentExit(enum.IntEnum):
    OK = 0
    USAGE = 2  # bad arguments or input files
    VERIFY = 3  # the bundle's hashes or manifest do not check out: never trust it
    RUNTIME = 4  # no usable TFLite/ONNX runtime on the device
    OTHER = 5  # anything else, including a full disk during install
