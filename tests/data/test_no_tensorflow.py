"""The data package must stay importable without TensorFlow (deploy hosts and quick CLI paths)."""

from __future__ import annotations

import subprocess
import sys

from pipeline.paths import PROJECT_ROOT


def test_data_modules_do_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "import pipeline.data.idx, pipeline.data.fashion_mnist, pipeline.data.image_folder\n"
        "import pipeline.data.splits, pipeline.data.preprocessing, pipeline.data.source\n"
        "import pipeline.models, pipeline.models.registry, pipeline.models.common\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported: {result.stdout.strip()}"
