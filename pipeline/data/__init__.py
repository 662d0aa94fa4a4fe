"""Data sources, splits and preprocessing (numpy + PIL only; never TensorFlow).

Entry point: :func:`pipeline.data.source.load_dataset`.
"""
