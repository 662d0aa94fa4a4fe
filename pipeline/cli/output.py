"""Where the CLI's tables and progress go, terminal or not.

rich cuts a table to 80 columns when it is not writing to a terminal (a pipe, CI), which leaves
headers like ``top…``; off a terminal the console is wide enough that tables print whole.
"""

from __future__ import annotations

import sys

PIPE_WIDTH = 240  # columns off a terminal: wider than any table edgeship prints


def make_console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    isatty = getattr(stream, "isatty", None)
    on_terminal = bool(isatty and isatty())
    return Console(stderr=stderr, width=None if on_terminal else PIPE_WIDTH)


def make_progress():
    """Bars on a terminal, one plain line per task and epoch otherwise."""
    from pipeline.progress import terminal_progress

    return terminal_progress(make_console(stderr=True))
