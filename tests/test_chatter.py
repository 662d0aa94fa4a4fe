"""TensorFlow's chatter goes to results/logs/, edgeship's own lines still reach the user."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SNIPPET = textwrap.dedent(
    """
    import logging, os, sys, warnings
    from pathlib import Path
    from pipeline.chatter import Chatter
    logging.basicConfig(level=logging.WARNING)  # configured after start, as the CLI does
    chatter = Chatter(Path(sys.argv[1]))
    assert chatter.start()
    logging.getLogger().handlers[0].setStream(sys.stderr)
    os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on\\n")
    warnings.warn("Statistics for quantized inputs were expected")
    logging.getLogger("absl").warning("absl chatter")
    logging.getLogger("pipeline.stages").warning("an edgeship warning")
    print("an edgeship line", file=sys.stderr)
    chatter.stop()
    print("after stop", file=sys.stderr)
    """
)


def test_native_writes_warnings_and_tf_loggers_go_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "run.log"
    proc = subprocess.run([sys.executable, "-c", SNIPPET, str(log)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "an edgeship line" in proc.stderr and "an edgeship warning" in proc.stderr and "after stop" in proc.stderr
    for chatter in ("oneDNN", "Statistics for quantized", "absl chatter"):
        assert chatter not in proc.stderr
        assert chatter in log.read_text()


def test_an_empty_log_is_removed_and_an_in_memory_stderr_is_left_alone(tmp_path: Path, capsys) -> None:
    from pipeline.chatter import Chatter

    quiet = tmp_path / "quiet.log"
    snippet = f"from pathlib import Path\nfrom pipeline.chatter import Chatter\nc = Chatter(Path({str(quiet)!r}))\nassert c.start()\nc.stop()\n"
    assert subprocess.run([sys.executable, "-c", snippet], timeout=60).returncode == 0
    assert not quiet.exists()
    assert Chatter(tmp_path / "x.log").start() is False  # pytest's captured stderr has no fd 2
