"""Native Keras 3 model compression (tensorflow-model-optimization only supports Keras 2).

:mod:`~pipeline.compress.magnitude` zeroes the smallest weights, during fine-tuning or at once;
:mod:`~pipeline.compress.structured` removes whole channels and rebuilds narrower layers, which is
what makes a .tflite smaller and faster without a sparse runtime;
:mod:`~pipeline.compress.sparsity_report` measures how many kernel weights are zero;
:mod:`~pipeline.compress.clustering` shares weights by k-means (Deep Compression).
"""
