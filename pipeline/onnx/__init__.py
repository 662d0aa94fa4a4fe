"""ONNX in and out.

* :mod:`pipeline.onnx.graph` reads and validates an ONNX file (onnx only, no TensorFlow): a clear
  error for a file that is not ONNX, an operator onnx2tf cannot convert, a dynamic input size the
  caller did not fix, or an input shape that only fits the other layout.
* :mod:`pipeline.onnx.importer` converts it to TensorFlow with onnx2tf (NCHW inputs become NHWC).
* :mod:`pipeline.onnx.check` compares a converted model with onnxruntime on real inputs.
* :mod:`pipeline.onnx.exporter` exports a Keras student to ONNX with tf2onnx and checks it.

onnx, onnxruntime, onnx2tf and tf2onnx are the optional extra ``edgeship[onnx]``; every import of
them happens inside the function that needs it.
"""
