"""The slowdown ladder: widened students do more MACs, predict exactly as before, and ship as real bundles.

The widening tests use a small real MobileNet v2 (random weights, trained-looking BatchNorm) and
real int8 conversion; the ladder tests build a tiny profile end to end (one epoch on 300 images)
and run the device agent on the rungs. No timing asserts: the gate bench measures true ratios.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.bench.widen import channels_for, choose_plan, plan_for, plans, widen
from pipeline.bundle.manifest import verify_bundle
from pipeline.models.cost import count_macs
from tests.helpers.agent_runner import run_agent

# --------------------------------------------------------------------------- widening a Keras model


@pytest.fixture(scope="module")
def student():
    import keras

    from pipeline.models.registry import build_student
    from tests.helpers.models import randomise_batchnorm

    keras.utils.set_random_seed(0)
    model = build_student("mobilenet_v2", (16, 16, 1), 4, 0.35)
    randomise_batchnorm(model)
    return model


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 1, (48, 16, 16, 1)).astype("float32")


def _int8(model, images: np.ndarray) -> bytes:
    from pipeline.quantize.convert import convert

    return convert(model, "int8", images[:32], int8_io=True)


def _raw_outputs(model_bytes: bytes, images: np.ndarray) -> np.ndarray:
    from pipeline.quantize.litert_eval import load_interpreter, quantize_input

    interpreter = load_interpreter(model_bytes, threads=1)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for image in images:
        interpreter.set_tensor(inp["index"], quantize_input(image[None], inp))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.array(outputs)


def _channel_counts(model_bytes: bytes) -> set[int]:
    from pipeline.quantize.litert_eval import load_interpreter

    return {int(d["shape"][-1]) for d in load_interpreter(model_bytes).get_tensor_details() if len(d["shape"])}


def test_only_plain_chains_are_widened(student) -> None:
    assert plan_for(student, "block3_project") is None  # feeds a residual Add
    assert plan_for(student, "logits") is None  # a Dense is a consumer, and the model's output
    head = plan_for(student, "head_conv")
    assert head is not None and head.consumers == ("logits",) and head.passthrough == ("head_bn", "head_relu6", "gap")
    expand = plan_for(student, "block2_expand_conv")
    assert expand is not None and expand.consumers == ("block2_project",) and "block2_dw" in expand.passthrough
    assert plans(student)[-1].producer == "head_conv"


def test_the_chosen_layer_feeds_kernels_the_dynamic_quantizer_already_quantizes(student) -> None:
    from pipeline.bench.widen import DYNAMIC_RANGE_MIN_WEIGHTS

    head = plan_for(student, "head_conv")
    assert head.consumer_weights < DYNAMIC_RANGE_MIN_WEIGHTS  # the small classifier stays float in dynamic mode
    chosen = choose_plan(student)
    assert chosen.producer == "block6_expand_conv" and chosen.consumer_weights >= DYNAMIC_RANGE_MIN_WEIGHTS


@pytest.mark.parametrize("mode", ["float32", "float16", "dynamic"])
def test_the_chosen_widening_predicts_as_before_in_every_float_weighted_mode(student, images: np.ndarray, mode: str) -> None:
    from pipeline.quantize.convert import convert
    from pipeline.quantize.litert_eval import predict

    plan = choose_plan(student)
    wide = widen(student, plan, channels_for(plan, count_macs(student), 0.40))
    base_out, wide_out = predict(convert(student, mode), images), predict(convert(wide, mode), images)
    # dynamic: the widened depthwise kernel grows past DYNAMIC_RANGE_MIN_WEIGHTS and is quantized in
    # the wide model only, which moves logits by a few 1e-4; the other modes change nothing but float noise
    np.testing.assert_allclose(wide_out, base_out, atol=2e-3 if mode == "dynamic" else 1e-5)
    assert np.array_equal(wide_out.argmax(1), base_out.argmax(1))


def test_macs_per_channel_is_exact_for_every_plan(student) -> None:
    base = count_macs(student)
    for plan in plans(student):
        assert count_macs(widen(student, plan, 3)) == base + 3 * plan.macs_per_channel, plan.producer


@pytest.mark.parametrize("extra", [0.05, 0.10, 0.20, 0.40])
def test_channel_rounding_lands_within_a_point_of_the_target(student, extra: float) -> None:
    base = count_macs(student)
    plan = choose_plan(student, max_step=0.02)
    channels = channels_for(plan, base, extra)
    achieved = count_macs(widen(student, plan, channels)) / base - 1
    assert abs(achieved - extra) <= 0.01
    assert channels_for(plan, base, 0.0) == 0
    with pytest.raises(ValueError, match="negative"):
        channels_for(plan, base, -0.1)


def test_a_model_with_only_coarse_layers_is_refused() -> None:
    import keras

    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 1), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no layer whose extra channel costs at most"):
        choose_plan(model)


@pytest.mark.parametrize("layer", ["head_conv", "block2_expand_conv"])
def test_widened_model_predicts_exactly_as_before_in_keras_and_int8(student, images: np.ndarray, layer: str) -> None:
    plan = plan_for(student, layer)
    extra = channels_for(plan, count_macs(student), 0.40)
    wide = widen(student, plan, extra)
    assert wide.get_layer(layer).filters == plan.channels + extra
    np.testing.assert_allclose(wide.predict(images, verbose=0), student.predict(images, verbose=0), atol=1e-5)
    base_bytes, wide_bytes = _int8(student, images), _int8(wide, images)
    # Zero weights add exactly nothing and the copied channels keep every quantization range.
    assert np.array_equal(_raw_outputs(wide_bytes, images), _raw_outputs(base_bytes, images))
    # The extra channels are really in the converted graph, not folded away.
    assert plan.channels + extra in _channel_counts(wide_bytes)
    assert plan.channels + extra not in _channel_counts(base_bytes)
    assert len(wide_bytes) > len(base_bytes)


# --------------------------------------------------------------------------- bundles from a tiny profile

TINY = {
    "name": "ladder-tiny",
    "seed": 5,
    "dataset": {"max_train": 300, "max_test": 120, "calibration_count": 40, "eval_count": 40},
    "student": {"family": "mobilenet_v2", "width_multiplier": 0.35, "training": {"epochs": 1, "batch_size": 64}},
    "distillation": {"enabled": False},
    "quantization": {"modes": ["int8"], "ship": "int8", "calibration_samples": 40},
}


@pytest.fixture(scope="module")
def tiny_profile():
    from pipeline.config.profile import BuildProfile

    return BuildProfile.model_validate(TINY)


@pytest.fixture(scope="module")
def built_ladder(tmp_path_factory: pytest.TempPathFactory, tiny_profile):
    from pipeline.bench.ladder import ladder

    root = tmp_path_factory.mktemp("ladder")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESHIP_RESULTS", str(root))
        rungs = ladder(tiny_profile, extra=(0.0, 0.10, 0.40))
    return root, rungs


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.mark.slow
def test_ladder_rungs_are_verified_bundles_of_the_same_model(built_ladder) -> None:
    _, (base, plus10, plus40) = built_ladder
    assert base.extra_macs == 0.0 and base.layer is None and base.macs == base.base_macs
    assert len({r.bundle_id for r in (base, plus10, plus40)}) == 3
    for rung in (plus10, plus40):
        assert abs(rung.extra_macs - rung.target_extra) <= 0.01
        assert rung.macs == round(rung.base_macs * (1 + rung.extra_macs)) and rung.base_macs == base.macs
        manifest = verify_bundle(rung.bundle_dir)
        assert manifest["profile"] == f"ladder-tiny+macs{round(rung.target_extra * 100):d}"
        assert manifest["host_metrics"]["macs"] == rung.macs
        assert manifest["model"]["quantization"] == "int8"
        # the same eval images, and the base model's predictions on every one of them
        for name in ("images.npy", "labels.npy", "host_predictions.npy"):
            assert np.array_equal(np.load(rung.bundle_dir / "eval" / name), np.load(base.bundle_dir / "eval" / name)), name
    assert _manifest(base.bundle_dir)["profile"] == "ladder-tiny"


@pytest.mark.slow
def test_the_agent_accepts_a_rung_and_agrees_with_the_host(built_ladder) -> None:
    _, (_, _, plus40) = built_ladder
    assert run_agent("verify", plus40.bundle_dir).json == {"ok": True, "bundle_id": plus40.bundle_id}
    record = run_agent("profile", plus40.bundle_dir, "--target", "local", "--runs", "2", "--min-seconds", "0").json
    assert record["accuracy"]["agreement_with_host"] == 1.0


@pytest.mark.slow
def test_the_shipped_model_has_the_extra_channels(built_ladder) -> None:
    _, (base, _, plus40) = built_ladder
    wide = _channel_counts((plus40.bundle_dir / "model.tflite").read_bytes())
    narrow = _channel_counts((base.bundle_dir / "model.tflite").read_bytes())
    # a tensor as wide as one of the base model's plus the extra channels, which the base lacks
    assert any(c - plus40.extra_channels in narrow for c in wide - narrow), (sorted(wide), sorted(narrow))


@pytest.mark.slow
def test_a_second_ladder_and_a_creep_reuse_the_cache(built_ladder, tiny_profile, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.bench.ladder import creep, ladder
    from pipeline.progress import NullProgress

    root, rungs = built_ladder
    monkeypatch.setenv("EDGESHIP_RESULTS", str(root))
    notes: list[str] = []

    class Notes(NullProgress):
        def note(self, message: str) -> None:
            notes.append(message)

    again = ladder(tiny_profile, extra=(0.0, 0.10, 0.40), progress=Notes())
    assert again == rungs
    assert [n for n in notes if n.startswith("[stage]")] and all(n.endswith("cached") for n in notes if n.startswith("[stage]"))
    nights = creep(tiny_profile, nights=2)
    assert [r.label for r in nights] == ["night 0", "night 1", "night 2"]
    assert nights[0].bundle_dir == rungs[0].bundle_dir
    for n, rung in enumerate(nights):
        assert abs(rung.extra_macs - (1.02**n - 1)) <= 0.01
    assert nights[1].macs < nights[2].macs and len({r.bundle_id for r in nights}) == 3


@pytest.mark.slow
def test_a_widening_that_changes_the_model_is_refused_before_anything_ships(
    built_ladder, tiny_profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.bench.widen as widen_module
    from pipeline.bench.ladder import ladder
    from pipeline.errors import EdgeshipError

    root, _ = built_ladder
    monkeypatch.setenv("EDGESHIP_RESULTS", str(root))
    real_widen = widen_module.widen

    def leaky_widen(model, plan, extra_channels):
        wide = real_widen(model, plan, extra_channels)
        for name in plan.consumers:  # the extra channels now reach the output
            kernel, *rest = wide.get_layer(name).get_weights()
            kernel[..., plan.channels :, :] = 0.5
            wide.get_layer(name).set_weights([kernel, *rest])
        return wide

    monkeypatch.setattr(widen_module, "widen", leaky_widen)
    bundles_before = sorted(p.name for p in (root / "bundles").iterdir())
    widened_before = sorted(p.parent.name for p in (root / "cache" / "widen").glob("*/meta.json"))
    with pytest.raises(EdgeshipError, match="changes its test logits by up to"):
        ladder(tiny_profile, extra=(0.20,))
    assert sorted(p.name for p in (root / "bundles").iterdir()) == bundles_before
    assert sorted(p.parent.name for p in (root / "cache" / "widen").glob("*/meta.json")) == widened_before
