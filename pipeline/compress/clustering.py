"""Weight sharing by k-means clustering, as in Deep Compression (Han et al., 2016).

Each Conv/DepthwiseConv/Dense kernel is clustered on its own: k-means with linear initialisation
(centroids evenly spaced between the smallest and largest weight, which the paper found keeps the
rare large weights that matter most), then every weight is replaced by its centroid. The .tflite
keeps one float per weight, so it is no smaller on disk; what shrinks is its entropy, which is what
gzip (or a palette/LUT-aware runtime) turns into bytes. Optional fine-tuning with
:class:`ClusterPreservingCallback` keeps the assignments fixed and moves only the centroids.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass, field
from typing import Sequence

import keras
import numpy as np

from pipeline.compress.magnitude import prunable_weights
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

MIN_CLUSTERS, MAX_CLUSTERS = 2, 256  # 1..8 bit indices
MAX_ITERATIONS = 100
PRUNED_SHARE = 0.01  # a kernel with at least this share of exact zeros counts as pruned


@dataclass(frozen=True)
class ClusteredLayer:
    """Report row for one kernel."""

    layer: str
    weights: int
    clusters: int
    unique_after: int
    mse: float


@dataclass
class ClusterResult:
    """Per-layer report plus the fixed assignments that fine-tuning must preserve."""

    layers: list[ClusteredLayer]
    assignments: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> cluster index per weight
    zero_cluster: set[str] = field(default_factory=set)  # pruned layers: cluster 0 is pinned at exactly 0

    def rows(self) -> list[dict]:
        """The per-layer report as plain dicts, for JSON reports."""
        return [vars(row).copy() for row in self.layers]


def check_clusters(clusters: int) -> int:
    """``clusters`` as an int in [2, 256] (1-8 bit indices), else ConfigError."""
    if isinstance(clusters, bool) or not isinstance(clusters, (int, np.integer)) or not MIN_CLUSTERS <= clusters <= MAX_CLUSTERS:
        raise ConfigError(f"Weight clustering needs an integer number of clusters in [{MIN_CLUSTERS}, {MAX_CLUSTERS}], got {clusters!r}.")
    return int(clusters)


def kmeans_1d(values: np.ndarray, clusters: int, iterations: int = MAX_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, labels) of Lloyd's k-means on scalars, linearly initialised, so deterministic.

    In one dimension the nearest centroid is found by bisecting the midpoints between sorted
    centroids. An empty cluster keeps its centroid, so it can only cost an unused index.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    centroids = np.linspace(flat.min(), flat.max(), clusters)
    labels = np.full(flat.size, -1, dtype=np.int64)
    for _ in range(iterations):
        order = np.argsort(centroids, kind="stable")
        centroids = centroids[order]
        new = np.searchsorted((centroids[1:] + centroids[:-1]) / 2.0, flat)
        if np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=clusters)
        sums = np.bincount(labels, weights=flat, minlength=clusters)
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
    return centroids, labels


def cluster_means(values: np.ndarray, labels: np.ndarray, clusters: int) -> np.ndarray:
    """``values`` with each weight replaced by the mean of its cluster (labels fixed)."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    counts = np.bincount(labels, minlength=clusters)
    means = np.bincount(labels, weights=flat, minlength=clusters) / np.maximum(counts, 1)
    return means[labels].reshape(np.shape(values))


def _kernels(model: keras.Model, min_params: int, skip: Sequence[str]) -> dict[str, keras.Variable]:
    # The classifier is clustered too: Deep Compression shares weights in every layer.
    return prunable_weights(model, include_classifier=True, min_params=min_params, skip=skip)


def cluster_weights(model: keras.Model, clusters: int = 16, min_params: int = 256, skip: Sequence[str] = ()) -> ClusterResult:
    """Cluster every Conv/DepthwiseConv/Dense kernel with >= ``min_params`` weights, in place.

    ``skip`` takes layer names or globs (``block1_*``). Small kernels are left alone: their index
    table and codebook would save little and they are often the most sensitive (stem, depthwise).
    """
    clusters = check_clusters(clusters)
    if min_params < 1:
        raise ConfigError(f"Weight clustering min_params must be at least 1, got {min_params}.")
    rows: list[ClusteredLayer] = []
    assignments: dict[str, np.ndarray] = {}
    zero_cluster: set[str] = set()
    for name, kernel in _kernels(model, min_params, skip).items():
        before = keras.ops.convert_to_numpy(kernel)
        pruned = before == 0
        if PRUNED_SHARE <= pruned.mean() < 1.0:
            # Deep Compression clusters only the surviving weights: pruned ones stay exactly zero
            # in a cluster of their own, so clustering never undoes pruning.
            centroids_nz, labels_nz = kmeans_1d(before[~pruned], clusters - 1)
            centroids = np.concatenate([[0.0], centroids_nz])
            labels = np.zeros(before.size, dtype=np.int64)
            labels[~pruned.ravel()] = labels_nz + 1
            zero_cluster.add(name)
        else:
            centroids, labels = kmeans_1d(before, clusters)
        after = centroids[labels].reshape(before.shape).astype(before.dtype)
        kernel.assign(after)
        assignments[name] = labels.reshape(before.shape)
        row = ClusteredLayer(name, int(before.size), clusters, int(np.unique(after).size), float(np.mean((before - after) ** 2)))
        rows.append(row)
        log.debug("clustered %s: %d weights -> %d values, mse %.3g", name, row.weights, row.unique_after, row.mse)
    if not rows:
        log.warning("weight clustering found no kernel with >= %d weights in '%s'", min_params, model.name)
    return ClusterResult(rows, assignments, zero_cluster)


class ClusterPreservingCallback(keras.callbacks.Callback):
    """Centroid fine-tuning: after every optimizer step, snap each clustered kernel back to the
    mean of its cluster's current weights, so assignments stay fixed while the centroids move
    with the gradients of the weights that share them (Deep Compression's centroid update,
    approximated through the optimizer's per-weight steps). Pass it to ``train_classifier``.
    """

    def __init__(self, result: ClusterResult) -> None:
        super().__init__()
        self.assignments = {name: labels.ravel() for name, labels in result.assignments.items()}
        self.clusters = {name: int(labels.max()) + 1 if labels.size else 1 for name, labels in self.assignments.items()}
        self.zero_cluster = set(result.zero_cluster)
        self._variables: dict[str, keras.Variable] = {}

    def on_train_begin(self, logs=None) -> None:
        kernels = prunable_weights(self.model, include_classifier=True)
        missing = sorted(set(self.assignments) - set(kernels))
        if missing:
            raise ValueError(f"model '{self.model.name}' has no clusterable layer named {', '.join(missing)}")
        self._variables = {name: kernels[name] for name in self.assignments}
        self._snap()

    def _snap(self) -> None:
        for name, kernel in self._variables.items():
            values = keras.ops.convert_to_numpy(kernel)
            snapped = cluster_means(values, self.assignments[name], self.clusters[name])
            if name in self.zero_cluster:
                snapped.ravel()[self.assignments[name] == 0] = 0.0
            kernel.assign(snapped.astype(values.dtype))

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._snap()


def gzip_size(data: bytes) -> int:
    """Bytes after gzip -9 (fixed mtime, so the figure is reproducible)."""
    return len(gzip.compress(bytes(data), compresslevel=9, mtime=0))


def compression_report(tflite_bytes_before: bytes, tflite_bytes_after: bytes) -> dict:
    """Raw and gzip sizes before/after clustering: the .tflite stays as large, the download shrinks."""
    raw_before, raw_after = len(tflite_bytes_before), len(tflite_bytes_after)
    gz_before, gz_after = gzip_size(tflite_bytes_before), gzip_size(tflite_bytes_after)
    return {
        "raw_bytes_before": raw_before,
        "raw_bytes_after": raw_after,
        "gzip_bytes_before": gz_before,
        "gzip_bytes_after": gz_after,
        "gzip_ratio_before": round(raw_before / gz_before, 3) if gz_before else None,
        "gzip_ratio_after": round(raw_after / gz_after, 3) if gz_after else None,
        "gzip_saving": round(1.0 - gz_after / gz_before, 4) if gz_before else None,
    }
