"""Deep Compression weight sharing: per-kernel k-means, centroid fine-tuning, gzip payoff."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.compress.clustering import check_clusters, compression_report, gzip_size, kmeans_1d
from pipeline.errors import ConfigError


def tiny_model(seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw"),  # 72 weights: skipped
            keras.layers.Conv2D(32, 1, activation="relu", name="pw"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="logits"),
        ]
    )


def random_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """32 random 12x12 images with 3 balanced labels, for one-epoch fine-tunes."""
    x = np.random.default_rng(seed).uniform(0, 1, size=(32, 12, 12, 1)).astype("float32")
    return x, np.arange(32) % 3


def one_epoch(model, x, y, callbacks) -> None:
    from pipeline.config.profile import TrainingConfig
    from pipeline.training.fit import train_classifier

    training = TrainingConfig(epochs=1, batch_size=8, learning_rate=0.01, augment=False)
    train_classifier(model, x, y, 3, training, seed=0, label="fine-tune", callbacks=callbacks)


def unique_counts(model, names) -> dict[str, int]:
    return {name: int(np.unique(model.get_layer(name).kernel.numpy()).size) for name in names}


@pytest.mark.parametrize("bad", [0, 1, 257, 2.5, "16", True])
def test_bad_cluster_counts_raise_config_error(bad) -> None:
    with pytest.raises(ConfigError):
        check_clusters(bad)


def test_bad_cluster_count_is_rejected_before_touching_the_model() -> None:
    from pipeline.compress.clustering import cluster_weights

    model = tiny_model()
    before = model.get_layer("pw").kernel.numpy().copy()
    with pytest.raises(ConfigError):
        cluster_weights(model, clusters=300)
    np.testing.assert_array_equal(model.get_layer("pw").kernel.numpy(), before)


def test_kmeans_is_deterministic_and_linearly_initialised() -> None:
    values = np.random.default_rng(0).normal(size=1000)
    centroids, labels = kmeans_1d(values, 8)
    again, labels_again = kmeans_1d(values, 8)
    np.testing.assert_array_equal(centroids, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert np.all(np.diff(centroids) > 0)
    assert values.min() <= centroids[0] and centroids[-1] <= values.max()
    # Lloyd's fixed point: each centroid is the mean of its members, each value at its nearest centroid.
    for k in range(8):
        assert np.isclose(centroids[k], values[labels == k].mean())
    assert np.array_equal(labels, np.argmin(np.abs(values[:, None] - centroids[None]), axis=1))
    flat, flat_labels = kmeans_1d(np.full(10, 0.5), 4)
    assert np.all(flat[flat_labels] == 0.5)


def test_gzip_size_and_report() -> None:
    noise = np.random.default_rng(0).bytes(4096)
    assert gzip_size(b"\0" * 4096) < 100 < gzip_size(noise)
    report = compression_report(noise, b"\0" * 4096)
    assert report["raw_bytes_before"] == report["raw_bytes_after"] == 4096
    assert report["gzip_bytes_after"] < report["gzip_bytes_before"]
    assert 0 < report["gzip_saving"] < 1


@pytest.mark.slow
def test_clustering_limits_unique_values_per_kernel() -> None:
    from pipeline.compress.clustering import cluster_weights

    model = tiny_model()
    result = cluster_weights(model, clusters=8, min_params=90)
    names = [row.layer for row in result.layers]
    assert names == ["pw", "logits"]  # conv and dw have 72 weights each, below min_params
    for row in result.layers:
        assert row.unique_after <= 8 and row.clusters == 8 and row.mse >= 0
    assert all(count <= 8 for count in unique_counts(model, names).values())
    assert unique_counts(model, ["dw"])["dw"] > 8  # left alone
    skipped = cluster_weights(tiny_model(), clusters=8, min_params=90, skip=["log*"])
    assert [row.layer for row in skipped.layers] == ["pw"]


@pytest.mark.slow
def test_callback_preserves_clusters_through_fine_tuning() -> None:
    from pipeline.compress.clustering import ClusterPreservingCallback, cluster_weights

    x, y = random_data(0)
    model = tiny_model()
    result = cluster_weights(model, clusters=4, min_params=64)
    names = [row.layer for row in result.layers]
    before = {name: model.get_layer(name).kernel.numpy().copy() for name in names}
    one_epoch(model, x, y, [ClusterPreservingCallback(result)])
    after = unique_counts(model, names)
    assert all(count <= 4 for count in after.values()), after
    assert any(not np.array_equal(before[n], model.get_layer(n).kernel.numpy()) for n in names)  # centroids moved
    for name in names:  # assignments are fixed: same cluster -> same value
        kernel = model.get_layer(name).kernel.numpy().ravel()
        labels = result.assignments[name].ravel()
        for k in np.unique(labels):
            assert np.unique(kernel[labels == k]).size == 1


@pytest.mark.slow
def test_clustered_float_tflite_gzips_smaller() -> None:
    from pipeline.compress.clustering import cluster_weights
    from pipeline.quantize.convert import convert

    model = tiny_model()
    model.get_layer("pw").kernel.assign(np.random.default_rng(1).normal(size=(1, 1, 8, 32)).astype("float32"))
    before = convert(model, "float32")
    cluster_weights(model, clusters=16, min_params=64)
    after = convert(model, "float32")
    report = compression_report(before, after)
    assert abs(report["raw_bytes_after"] - report["raw_bytes_before"]) < 64  # same layout, same floats count
    assert report["gzip_bytes_after"] < report["gzip_bytes_before"]


@pytest.mark.slow
def test_clustering_a_pruned_model_keeps_pruned_weights_exactly_zero() -> None:
    """Deep Compression order: prune, then share weights among the survivors only."""
    from pipeline.compress.clustering import ClusterPreservingCallback, cluster_weights
    from pipeline.compress.magnitude import prune_to

    x, y = random_data(1)
    model = tiny_model()
    prune_to(model, 0.6, include_classifier=True)
    zeros = {name: model.get_layer(name).kernel.numpy() == 0 for name in ("conv", "pw", "logits")}
    result = cluster_weights(model, clusters=4, min_params=1)
    assert {"conv", "pw", "logits"} <= result.zero_cluster
    one_epoch(model, x, y, [ClusterPreservingCallback(result)])
    for name, mask in zeros.items():
        kernel = model.get_layer(name).kernel.numpy()
        assert np.all(kernel[mask] == 0), name  # pruning survived clustering and fine-tuning
        assert np.unique(kernel).size <= 4, name  # zero plus at most 3 shared values
    assert np.any(model.get_layer("pw").kernel.numpy()[~zeros["pw"]] != 0)
