"""Run the agent's numpy code paths with a fake interpreter; prints one JSON line.

Runs under the agent's floor (Python 3.7, numpy 1.16), so it is Python 3.7 code and imports nothing
from the project: ``python floor_numpy_paths.py AGENT_PY WORK_DIR`` (test_agent_numpy_floor.py).
"""

import importlib.util
import json
import os
import sys

import numpy as np


class FakeInterpreter(object):
    """Answers class (sum of the input) mod 3, as one-hot float32 scores."""

    def __init__(self):
        self.x = None

    def set_tensor(self, index, value):
        self.x = value

    def invoke(self):
        pass

    def get_tensor(self, index):
        return np.eye(3, dtype=np.float32)[int(self.x.sum()) % 3].reshape(1, 3)


def main(agent_path, work):
    spec = importlib.util.spec_from_file_location("agent", agent_path)
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    images = (np.arange(3 * 4 * 4) % 256).astype(np.uint8).reshape(3, 4, 4)
    np.save(os.path.join(work, "x.npy"), images)
    np.save(os.path.join(work, "y.npy"), np.array([0, 1, 2]))
    np.save(os.path.join(work, "h.npy"), np.array([[0], [1], [1]]))
    with open(os.path.join(work, "labels.txt"), "w") as handle:
        handle.write("a\nb\nc\n")
    manifest = {
        "files": {"x.npy": 1, "y.npy": 1, "h.npy": 1, "labels.txt": 1},
        "labels": "labels.txt",
        "eval": {"inputs": "x.npy", "labels": "y.npy", "host_predictions": "h.npy", "count": 3},
    }
    images, labels, host, _ = agent.load_eval(np, work, manifest, [])
    preprocessing = {"scale": 1 / 255.0, "mean": [0.5], "std": [0.25]}
    f32 = agent.preprocess(np, images, preprocessing, {"dtype": np.float32})
    i8 = agent.preprocess(np, images, preprocessing, {"dtype": np.int8, "quantization": (0.05, -3)})
    inputs = [np.ascontiguousarray(i8[i : i + 1]) for i in range(len(i8))]
    accuracy = agent.evaluate(np, FakeInterpreter(), 0, 1, inputs, labels, host)
    print(json.dumps({
        "python": sys.version.split()[0], "numpy": np.__version__, "f32": str(f32.dtype), "i8": str(i8.dtype),
        "accuracy": accuracy, "outputs": int(np.prod([1, 3])), "runtime": agent.runtime_info(np, "fake", "0", 1, 1),
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
