"""edgeship: build, compress, package and measure neural networks on edge devices."""

__version__ = "0.1.0"
