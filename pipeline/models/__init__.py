"""Model families: the ResNet teacher and the compact students (MobileNet v1/v2, SqueezeNet).

Nothing here is imported eagerly: Keras/TensorFlow load only when a builder module is imported, so
``import pipeline`` and the deploy path stay fast on machines without TensorFlow.
"""
