"""The build's last check: the rootfs's own python3 creates a TFLite interpreter and runs a model.

Importing ``tflite_runtime`` is not enough. tflite-runtime 2.13.0's armv7l wheel imports fine under
Debian bullseye's numpy 1.19 but cannot create an interpreter ("module compiled against API version
0xe but this version of numpy is 0xd"); 2.12.0 needs a newer libstdc++ (GLIBCXX_3.4.29) than
bullseye has. So the probe runs a real model: ``y = 2x + 1`` on a float32 [1, 4] tensor, converted
once with TensorFlow's TFLiteConverter (948 bytes, embedded below), and checks the answer.
"""

from __future__ import annotations

#: base64 of the .tflite flatbuffer (MUL then ADD, builtin ops version 1)
PROBE_MODEL_B64 = (
    "HAAAAFRGTDMUACAAHAAYABQAEAAMAAAACAAEABQAAAAcAAAAHAAAAHQAAABUAQAAZAEAAFQDAAADAAAAAAAAAAIAAAA0AAAA"
    "BAAAANz///8HAAAABAAAABMAAABDT05WRVJTSU9OX01FVEFEQVRBAAgADAAIAAQACAAAAAYAAAAEAAAAEwAAAG1pbl9ydW50"
    "aW1lX3ZlcnNpb24ACAAAANwAAADUAAAAwAAAAKQAAACcAAAAlAAAAHQAAAAEAAAAXv///wQAAABgAAAAEAAAAAAAAAAIAA4A"
    "CAAEAAgAAAAQAAAAJAAAAAAABgAIAAQABgAAAAQAAAAAAAAADAAYABQAEAAMAAQADAAAADdlf7AXNt3tAwAAAAIAAAAEAAAA"
    "BgAAADIuMjEuMAAAyv///wQAAAAQAAAAMS41LjAAAAAAAAAAAAAAALT9//+4/f//7v///wQAAAAEAAAAAAAAQAAABgAIAAQA"
    "BgAAAAQAAAAEAAAAAACAP+T9///o/f//DwAAAE1MSVIgQ29udmVydGVkLgABAAAAFAAAAAAADgAYABQAEAAMAAgABAAOAAAA"
    "FAAAABwAAACgAAAApAAAAKgAAAAEAAAAbWFpbgAAAAACAAAAWAAAABQAAAAAAA4AGAAUABAADAALAAQADgAAABQAAAAAAAAL"
    "EAAAABQAAAABAAAAcP7//wEAAAAEAAAAAgAAAAMAAAABAAAAAAAOABQAAAAQAAwACwAEAA4AAAAQAAAAAAAAFQwAAAAQAAAA"
    "rP7//wEAAAADAAAAAgAAAAAAAAACAAAAAQAAAAQAAAABAAAAAAAAAAUAAADsAAAApAAAAHQAAABAAAAABAAAAD7///8AAAAB"
    "EAAAABAAAAAFAAAAGAAAAAT///8IAAAASWRlbnRpdHkAAAAAAgAAAAEAAAAEAAAAdv///wAAAAEQAAAAEAAAAAQAAAAQAAAA"
    "PP///wMAAABtdWwAAgAAAAEAAAAEAAAApv///wAAAAEQAAAAEAAAAAMAAAAUAAAAbP///wUAAABtdWwveQAAAAAAAADS////"
    "AAAAARAAAAAQAAAAAgAAABQAAACY////BQAAAGFkZC95AAAAAAAAAAAAFgAYABQAAAAQAAwACAAAAAAAAAAHABYAAAAAAAAB"
    "EAAAABAAAAABAAAAEAAAANz///8BAAAAeAAAAAIAAAABAAAABAAAAAIAAAAcAAAACAAAAAQABAAEAAAADAAMAAsAAAAAAAQA"
    "DAAAABIAAAAAAAAS"
)

#: Runs inside the rootfs under emulation; prints one JSON line of versions, or fails.
PROBE_CODE = """
import base64, json, platform, numpy, tflite_runtime
from tflite_runtime.interpreter import Interpreter
interpreter = Interpreter(model_content=base64.b64decode(%r))
interpreter.allocate_tensors()
source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
interpreter.set_tensor(source["index"], numpy.arange(4, dtype=numpy.float32).reshape(1, 4))
interpreter.invoke()
answer = interpreter.get_tensor(sink["index"]).ravel().tolist()
assert answer == [1.0, 3.0, 5.0, 7.0], "the probe model answered %%s, not [1, 3, 5, 7]" %% answer
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "numpy": numpy.__version__, "tflite_runtime": tflite_runtime.__version__}))
""" % PROBE_MODEL_B64
