"""Structured channel pruning: real narrower layers, identical outputs when nothing (or only dead
channels) is removed, smaller .tflite files, and clear reasons for what cannot be pruned."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from pipeline.compress.structured import kept_channels, prune_channels
from pipeline.errors import ConfigError
from pipeline.models.registry import FAMILIES, build_student
from tests.helpers.models import randomise_batchnorm

# A layer of each family that must be narrowed: v2 expansion, v1 pointwise, the fused 3x3 expansion, SqueezeNet squeeze.
MUST_PRUNE = {
    "mobilenet_v1": "block3_pw_conv", "mobilenet_v2": "block2_expand_conv",
    "mobilenet_v2_fused": "block1_fused_conv", "squeezenet": "fire1_squeeze_conv",
}


def images(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 28, 28, 1)).astype("float32")


def student(family: str, seed: int = 1) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_student(family, (28, 28, 1), 10, 1.0)


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    "channels, fraction, round_to, expected",
    [
        (64, 0.5, 8, 32), (24, 0.5, 8, 16), (96, 0.75, 8, 24), (12, 0.5, 8, 8),  # nearest multiple of 8, never below 8
        (4, 0.5, 8, 4), (10, 0.0, 8, 10), (10, 0.5, 1, 5), (3, 0.9, 1, 1),  # never above the original, at least 1
    ],
)
def test_kept_channels_rounding(channels: int, fraction: float, round_to: int, expected: int) -> None:
    assert kept_channels(channels, fraction, round_to) == expected


def small_chain() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Conv2D(16, 1, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x), name="chain")


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, "half"])
def test_bad_fraction_raises_config_error(bad) -> None:
    with pytest.raises(ConfigError, match=r"fraction .*\[0, 1\)"):
        prune_channels(small_chain(), bad)


def test_bad_importance_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="importance"):
        prune_channels(small_chain(), 0.5, importance="l0")  # type: ignore[arg-type]


# ------------------------------------------------------------------ what cannot be pruned


def residual_only() -> keras.Model:
    inputs = keras.Input((8, 8, 8), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.Add(name="block3_add")([inputs, x])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x), name="residual")


def test_model_without_prunable_group_raises_naming_the_add() -> None:
    with pytest.raises(ConfigError, match=r"'conv_a' is tied by 'block3_add' to 'image', whose width cannot change.*'logits' is a model output"):
        prune_channels(residual_only(), 0.5)


def test_residual_sums_with_the_input_are_reported_as_skipped() -> None:
    inputs = keras.Input((8, 8, 8), name="image")
    y = keras.layers.Conv2D(16, 3, padding="same", name="inner")(inputs)
    y = keras.layers.ReLU(name="inner_relu")(y)
    y = keras.layers.Conv2D(8, 3, padding="same", name="outer")(y)
    x = keras.layers.Add(name="res_add")([inputs, y])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
    result = prune_channels(model, 0.5)
    assert [(g.layer, g.channels, g.kept) for g in result.groups] == [("inner", 16, 8)]
    tied = "is tied by 'res_add' to 'image', whose width cannot change"
    assert ("outer", tied) in result.skipped
    assert ("logits", "is a model output") in result.skipped
    assert result.model.get_layer("outer").kernel.shape == (3, 3, 8, 8)
    report = json.loads(json.dumps(result.as_dict()))  # plain data for the stage's metrics
    assert report["groups"][0]["kept"] == 8 and {"layer": "outer", "reason": tied} in report["skipped"]
    assert report["parameters_after"] < report["parameters_before"] and report["macs_after"] < report["macs_before"]


def two_block_residual(head_is_output: bool = False) -> keras.Model:
    """stem -> [a1 -> a2] + stem -> [b1 -> b2] + that -> gap -> logits: stem, a2 and b2 are tied."""
    inputs = keras.Input((8, 8, 3), name="image")
    stem = keras.layers.ReLU(name="stem_relu")(keras.layers.Conv2D(16, 3, padding="same", name="stem")(inputs))
    x = stem
    for block in ("a", "b"):
        y = keras.layers.ReLU(name=f"{block}1_relu")(keras.layers.Conv2D(32, 1, name=f"{block}1")(x))
        y = keras.layers.BatchNormalization(name=f"{block}2_bn")(keras.layers.Conv2D(16, 1, name=f"{block}2")(y))
        x = keras.layers.Add(name=f"{block}_add")([x, y])
    if head_is_output:
        return keras.Model(inputs, x, name="features")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x), name="two_blocks")


def test_sources_tied_by_adds_are_pruned_together_to_the_same_channels() -> None:
    keras.utils.set_random_seed(3)
    model = two_block_residual()
    result = prune_channels(model, 0.5)
    by_layer = {g.layer: g for g in result.groups}
    assert set(by_layer) == {"stem", "a1", "a2", "b1", "b2"}
    assert sorted(by_layer["stem"].tied) == ["a2", "b2"] and by_layer["a1"].tied == []
    assert {by_layer[n].kept for n in ("stem", "a2", "b2")} == {8}
    pruned = result.model
    # the residual stream is 8 wide everywhere, and what reads it reads 8 channels
    assert pruned.get_layer("a_add").output.shape[-1] == pruned.get_layer("b_add").output.shape[-1] == 8
    assert pruned.get_layer("b1").kernel.shape[-2] == 8 and pruned.get_layer("logits").kernel.shape[0] == 8
    assert not any("Add" in reason or "add" in reason for _, reason in result.skipped)
    # the group is ranked by the members' normalised L1 norms, summed
    stem_keep = np.sort(np.argsort(-sum(
        np.abs(model.get_layer(n).kernel.numpy()).sum(axis=(0, 1, 2)) / np.abs(model.get_layer(n).kernel.numpy()).sum()
        for n in ("stem", "a2", "b2")
    ), kind="stable")[:8])
    np.testing.assert_array_equal(
        pruned.get_layer("stem").kernel.numpy(), model.get_layer("stem").kernel.numpy()[..., stem_keep]
    )
    for bn in ("a2_bn", "b2_bn"):  # the members' output channels were cut with the same indices
        np.testing.assert_array_equal(pruned.get_layer(bn).gamma.numpy(), model.get_layer(bn).gamma.numpy()[stem_keep])


def test_a_group_tied_to_a_skipped_source_is_skipped_whole() -> None:
    result = prune_channels(two_block_residual(), 0.5, skip=["a2"])
    reasons = dict(result.skipped)
    assert reasons["a2"] == "listed in skip"
    assert reasons["stem"] == reasons["b2"] == "is tied by 'a_add', 'b_add' to 'a2' (listed in skip)"
    assert sorted(g.layer for g in result.groups) == ["a1", "b1"]
    assert result.model.get_layer("a_add").output.shape[-1] == 16


def test_depthwise_multiplier_and_skip_list_block_pruning() -> None:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 1, name="a")(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw2")(x)
    x = keras.layers.Conv2D(16, 1, name="b")(x)
    x = keras.layers.Conv2D(16, 1, name="c")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
    result = prune_channels(model, 0.5, skip=["c"])
    reasons = dict(result.skipped)
    assert reasons["a"] == "feeds DepthwiseConv2D 'dw2'" and reasons["c"] == "listed in skip"
    assert [g.layer for g in result.groups] == ["b"]


# ------------------------------------------------------------------ rebuilding


def test_sequential_compiled_with_kd_loss_is_pruned_and_original_untouched() -> None:
    """The stage prunes a trained student, compiled with edgeship's (non-serialisable) kd_loss."""
    from pipeline.training.losses import kd_loss

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(16, 3, padding="same", name="c1"),
        keras.layers.BatchNormalization(name="bn1"),
        keras.layers.ReLU(name="r1"),
        keras.layers.Conv2D(16, 3, padding="same", name="c2"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(32, name="fc"),
        keras.layers.Dense(4, name="out"),
    ])
    model.compile(optimizer="adam", loss=kd_loss(4, 2.0, 0.5))
    before = [w.copy() for w in model.get_weights()]
    result = prune_channels(model, 0.5, importance="l2")
    assert isinstance(result.model, keras.Sequential)
    assert result.model.get_layer("c1").kernel.shape == (3, 3, 3, 8)
    assert result.model.get_layer("c2").kernel.shape == (3, 3, 8, 8)
    assert result.model.get_layer("fc").kernel.shape == (8, 16)
    assert result.model.get_layer("out").kernel.shape == (16, 4)
    assert result.model.get_layer("bn1").gamma.shape == (8,)
    assert result.model(np.zeros((2, 8, 8, 3), "float32")).shape == (2, 4)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert {g.importance for g in result.groups} == {"l2"}


def test_bn_importance_without_batchnorm_falls_back_to_l1() -> None:
    result = prune_channels(small_chain(), 0.5, importance="bn")
    used = {g.layer: g.importance for g in result.groups}
    assert used == {"c1": "bn", "c2": "l1"}


def test_kept_channels_are_the_most_important() -> None:
    model = small_chain()
    c1 = model.get_layer("c1")
    kernel = c1.kernel.numpy()
    kernel[..., ::2] *= 100.0  # even filters dominate
    c1.kernel.assign(kernel)
    result = prune_channels(model, 0.5, importance="l1")
    np.testing.assert_array_equal(result.model.get_layer("c1").kernel.numpy(), kernel[..., ::2])
    assert result.groups[0].kept_importance > 0.98


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_fraction_zero_reproduces_outputs(family: str) -> None:
    model = student(family)
    randomise_batchnorm(model)
    result = prune_channels(model, 0.0)
    assert all(g.kept == g.channels for g in result.groups)
    assert result.parameters_after == result.parameters_before
    np.testing.assert_allclose(np.asarray(result.model(images())), np.asarray(model(images())), atol=1e-5)


def kill_channels(model: keras.Model, seed: int = 0) -> None:
    """Zero gamma and beta of a random half of every conv's BatchNorm: those channels output exactly 0
    downstream (ReLU(0) = 0, bias-free depthwise of 0 = 0, fresh BN of 0 = 0), so removing them must not
    change the logits. ``bn`` importance ranks them last; everything else keeps random scales.

    Layers of one width lose the same channels: the sources an Add ties together must all be dead
    in a channel for the sum to be zero there."""
    rng = np.random.default_rng(seed)
    dead_by_width: dict[int, np.ndarray] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if isinstance(layer.input._keras_history.operation, keras.layers.DepthwiseConv2D):
                continue  # keep it fresh: it maps the zeros coming through the depthwise conv to zero
            gamma, beta, mean, var = layer.get_weights()
            gamma = rng.uniform(0.5, 1.5, gamma.shape).astype("float32")
            beta = rng.normal(0, 0.2, beta.shape).astype("float32")
            dead = dead_by_width.setdefault(len(gamma), rng.permutation(len(gamma))[: len(gamma) // 2])
            gamma[dead] = beta[dead] = 0.0
            layer.set_weights([gamma, beta, mean, var])


@pytest.mark.slow
@pytest.mark.parametrize("family", [*FAMILIES, "resnet_teacher"])
def test_removing_dead_channels_keeps_outputs(family: str) -> None:
    """Checks every slice (kernels in and out, BN, depthwise, Concatenate offsets, Dense rows)."""
    if family == "resnet_teacher":
        from pipeline.models.teacher import build_resnet_teacher

        keras.utils.set_random_seed(1)
        model = build_resnet_teacher((28, 28, 1), 10, base_width=16)
    else:
        model = student(family)
    kill_channels(model)
    result = prune_channels(model, 0.5, importance="bn", round_to=1)
    assert result.groups and all(g.kept == g.channels // 2 for g in result.groups)
    np.testing.assert_allclose(np.asarray(result.model(images())), np.asarray(model(images())), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_half_pruned_students_are_narrower_smaller_and_run(family: str) -> None:
    from pipeline.quantize.convert import convert

    model = student(family)
    randomise_batchnorm(model)
    result = prune_channels(model, 0.5)
    pruned = result.model
    narrowed = {g.layer: g for g in result.groups if g.kept < g.channels}
    assert MUST_PRUNE[family] in narrowed
    for name, group in narrowed.items():
        assert model.get_layer(name).kernel.shape[-1] == group.channels
        assert pruned.get_layer(name).kernel.shape[-1] == group.kept <= group.channels // 2 + 8
    # every conv's input width matches what it is really fed: the rebuilt graph is consistent
    for layer in pruned.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.kernel.shape[-2] == layer.input.shape[-1]
    assert pruned(images()).shape == (4, 10)
    assert result.parameters_after < 0.7 * result.parameters_before
    assert result.macs_after < 0.7 * result.macs_before
    assert len(convert(pruned, "float32")) < 0.8 * len(convert(model, "float32"))
