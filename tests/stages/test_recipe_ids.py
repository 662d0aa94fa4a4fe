"""Recipe ids are the cache's keys: a refactor that changes one silently retrains everything.

Each profile is run through ``build_profile`` with ``run_stage`` replaced: every stage's recipe id is
recorded, and the stage "returns" an artifact with a fixed fake id, so each literal below depends on
that stage's name, version, recipe config and which stages feed it. If one of them changes on purpose
(a stage ``version`` bump, a new recipe key), regenerate with ``python -m tests.stages.test_recipe_ids``
and say why in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping

import pytest

import pipeline.build as build
from pipeline.config.loader import validate
from pipeline.config.profile import BuildProfile, load_profile
from pipeline.stages.base import Artifact, RecipeIgnore, RunContext, Stage
from pipeline.execute.stage_runner import StageJob, StageRunner
from tests.helpers.profiles import merged

TEACHER_FILES = {"teacher.onnx": b"fixed stand-in for an ONNX teacher", "teacher.keras": b"fixed stand-in for a Keras teacher"}

# Profiles that reach the branches the built-in ones do not: every recipe key that is ignored, and
# every one that is kept, in both states.
VARIANTS: dict[str, dict[str, Any]] = {
    "everything": {
        "teacher": {"preprocessing": {"height": 32, "width": 32, "channels": 1}},
        "distillation": {
            "flip_average": True, "teacher_weight": 2.0, "scratch_baseline": False,
            "extra_teachers": [{"weight": 0.5, "teacher": {"kind": "keras-file", "path": "teacher.keras"}}],
        },
        "pruning": {"method": "structured", "sparsity": 0.5},
        "clustering": {"enabled": True, "clusters": 8},
        "quantization": {"modes": ["float32", "int8", "mixed"], "ship": "mixed", "mixed": {"max_accuracy_drop": 0.01}},
        "export": {"onnx": True, "opset": 15},
    },
    "onnx-teacher": {
        "teacher": {"kind": "onnx-file", "path": "teacher.onnx", "onnx": {"layout": "NHWC"}},
        "distillation": {"extra_teachers": [{"teacher": {"kind": "onnx-file", "path": "teacher.onnx"}}]},
        "pruning": {"method": "magnitude", "distill": False},
        "quantization": {"int8_io": False},
    },
    "no-distillation": {
        "distillation": {"enabled": False},
        "pruning": {"method": "magnitude", "sparsity": 0.3},
        "quantization": {"modes": ["float16", "dynamic"], "ship": "dynamic"},
    },
}


def profiles() -> dict[str, BuildProfile]:
    found = {name: load_profile(name) for name in ("default", "quick", "squeezenet")}
    quick = load_profile("quick").model_dump(mode="json", exclude_unset=True)
    for name, sections in VARIANTS.items():
        found[name] = validate(BuildProfile, merged({**quick, "name": name}, **sections), name)
    return found


def recipe_ids(profile: BuildProfile, monkeypatch: pytest.MonkeyPatch, tmp: Path, until: str | None = None) -> dict[str, str]:
    """``{build key: recipe id}`` for every stage ``profile`` builds; nothing runs."""
    ids: dict[str, str] = {}
    host_metrics = {"accuracy": 1.0, "tflite_bytes": 0, "parameters": 0}

    def fake_run_stage(stage: Stage, inputs: Mapping[str, Artifact], ctx: RunContext) -> Artifact:
        ids[f"{len(ids):02d} {stage.name}"] = stage.recipe_id(inputs)  # in build order
        return Artifact(stage=stage.name, recipe_id=f"fixed-{stage.name}-{len(ids)}", path=tmp, meta={"metrics": {"host_metrics": host_metrics}})

    def fake_run_all(runner: StageRunner, jobs: list[StageJob], concurrent: bool = True) -> dict[str, Artifact]:
        return {job.key: fake_run_stage(job.stage, job.inputs, runner.ctx) for job in jobs}

    monkeypatch.setattr(StageRunner, "run_all", fake_run_all)
    monkeypatch.setattr(build, "publish_bundle", lambda artifact, root: tmp)
    build.build_profile(profile, until=until)
    return ids


EXPECTED: dict[str, dict[str, str]] = {
    "default": {
        "00 data": "328f6b6fa1b4c49de2393f6ef77286cb2cbb51a915b6599871d4c9f90a0d926a",
        "01 teacher": "c5f9f7f779fc7bc180d05863cfecd2bfd6e71d0a1f836fc2a579b7243f465f19",
        "02 distill": "eb8575fe3583c980cf23666b257a97206493cae7a274cb41dd63000464861932",
        "03 distill": "98e2785af484a67647b93f13f46382e03ff390f5b891b5325cc24b9f2d3240c4",
        "04 quantize": "052b2f5ff968bdb325fa569b1e46d478364bb1d3b1e903c168b66530a375b6cf",
        "05 quantize": "86ed84907ec6eb11cc125882ec2f86fa36a7768fe5d382dc400f7da624b5c95c",
        "06 quantize": "e0263e2dbce8fb98b4b57c6baed64132e9466046003817b3812c568831c15b2e",
        "07 quantize": "af6c4d73a730441a422915f381b345185179ead2d1a3caa3efaf217be7fe7acc",
        "08 evaluate": "258d1858b1edd5d9f690aea46c2f3fba801c2e617d456745c73274dcdbdfbefc",
        "09 evaluate": "5b9e89dd906bf11979e01f5ad6164e018637d59c280588466e8283a3a0966bd0",
        "10 evaluate": "a38550a8d31328ddf1a1b61c63b6a4e2914f1e29effa0b80a677190d69067f95",
        "11 evaluate": "745af9fbf5ca9f0c116c6a5ef1a36eb636fc2a55f7239fa0678e5579983d28f2",
        "12 package": "556919a83f8fcd1c25fda0fbe262c0fd0a64c3000501b80b07249243894368c9",
    },
    "quick": {
        "00 data": "66f2f5e87257aea8f33fe04a3c7eeb22982d805f975c5679d3bb222ab746ab2a",
        "01 teacher": "db607d9f595aeda38ab5708ddce4f483cfe88331873365f92ea9b079f61df106",
        "02 distill": "1f18eca8a6cda9519af8b73ffc9998b414f41e8303560567ba5936c3420fecb9",
        "03 distill": "86fa8fbdd2567db8f8f834c40f5abcd79ea68639198b70ae8aeea6b4c0ab1614",
        "04 quantize": "052b2f5ff968bdb325fa569b1e46d478364bb1d3b1e903c168b66530a375b6cf",
        "05 quantize": "86ed84907ec6eb11cc125882ec2f86fa36a7768fe5d382dc400f7da624b5c95c",
        "06 quantize": "e0263e2dbce8fb98b4b57c6baed64132e9466046003817b3812c568831c15b2e",
        "07 quantize": "88a48ca989ab257d877107e43405616e3d03552cf2c3559760a4c606d79448c7",
        "08 evaluate": "258d1858b1edd5d9f690aea46c2f3fba801c2e617d456745c73274dcdbdfbefc",
        "09 evaluate": "5b9e89dd906bf11979e01f5ad6164e018637d59c280588466e8283a3a0966bd0",
        "10 evaluate": "a38550a8d31328ddf1a1b61c63b6a4e2914f1e29effa0b80a677190d69067f95",
        "11 evaluate": "745af9fbf5ca9f0c116c6a5ef1a36eb636fc2a55f7239fa0678e5579983d28f2",
        "12 package": "04fba8c939a5ee045f10dae3c5efa4a9bdc4da1ed5297148e40d65b6a8b3b720",
    },
    "squeezenet": {
        "00 data": "328f6b6fa1b4c49de2393f6ef77286cb2cbb51a915b6599871d4c9f90a0d926a",
        "01 teacher": "c5f9f7f779fc7bc180d05863cfecd2bfd6e71d0a1f836fc2a579b7243f465f19",
        "02 distill": "2fec17525d9264aef9941deeae4a89daf58ad2ca0d53f9be6f786fed920f9ca6",
        "03 distill": "1ec295badd6b593849085f77454656c92197cf5071cefdd21faed3d38964ddfb",
        "04 quantize": "052b2f5ff968bdb325fa569b1e46d478364bb1d3b1e903c168b66530a375b6cf",
        "05 quantize": "bb55abebf3fa05fef5c7f8a74508d78b2ede81d8e0c3f25fb97788b11e9f5b49",
        "06 evaluate": "258d1858b1edd5d9f690aea46c2f3fba801c2e617d456745c73274dcdbdfbefc",
        "07 evaluate": "5b9e89dd906bf11979e01f5ad6164e018637d59c280588466e8283a3a0966bd0",
        "08 package": "05da264964198f9b4844365bf364da4d782ccd1ecdb46ae2993e13b99c9caf96",
    },
    "everything": {
        "00 data": "66f2f5e87257aea8f33fe04a3c7eeb22982d805f975c5679d3bb222ab746ab2a",
        "01 data": "93f18c6cd9ab2b8464e3c0eea7ec257a6dfa42cdae45212b208b71bdfbd00ae0",
        "02 teacher": "13483d49e42de7d395c20ea33e4dbe1573e94c573df12d50846890783c3c6dfd",
        "03 teacher": "6a6d01b2c65d707bfd6ce0e19f6a34ea70a5e6d1fcf4baf4a229af15477825fd",
        "04 distill": "872b0310a26cc7a6e51ce04c22042c48e113d55ae41607c395358d5c3aa2e8c8",
        "05 prune": "0ff7ad8222c7301faa09faaf5a570b216c6a44da8f4a567332014946d4d60963",
        "06 quantize": "29780b71150e46cd4ce834cd58e20ac8acc1ee0e8423c65368297c2faa0d94d3",
        "07 quantize": "ec3f7448bf9735b41cf1f75dda033af72d6e01c2d8b966b69c0934dc7c4e91fd",
        "08 quantize": "55ef1631a4535d6bc06afc1e0e620b35fd1c50272c65b28b1dab233412faa826",
        "09 evaluate": "91315dce56d26e17e4325ec437da0d08371b39ca73a041e894145e629bde390a",
        "10 evaluate": "ce98aad557ddbd08b7d5a4ae9356f73d3a0cfe4f5c31639187eb6ebffa086e8e",
        "11 evaluate": "94411db2aeeb7ae24e1e5ea4d972e89ace2e79870061f4c0fd612439f50af4d6",
        "12 export_onnx": "616aa7f51567e8b0378d06c277967d087b82ba31ce191fe8b990bba80d3e238d",
        "13 package": "5aaa805bf6ae92e552192702122ea62bb4b779f37efecbaefa05f40b044db69b",
    },
    "onnx-teacher": {
        "00 data": "66f2f5e87257aea8f33fe04a3c7eeb22982d805f975c5679d3bb222ab746ab2a",
        "01 onnx_import": "b97f64163fe9fd35d5ed0c6e377e18552e7a9995d1c92fda1f8395b54bf5ecc5",
        "02 teacher": "cd4dcf636a2eb983c46c3cad1e85d1faa0f41ef051da8c487470f826efe85e3d",
        "03 onnx_import": "9e2835e3ae7a8c087ec181b183611ad15c321d2f5b82ae0a12807774584967a2",
        "04 teacher": "02e1c3f817e7285bde2629a35b1ecee7ebbfe377f2211a2efae4a56c8d6c7249",
        "05 distill": "db2aee4c16da4dd6c4ddc9c444329c144f926771c6bdd8e4775e638e76c46008",
        "06 distill": "86fa8fbdd2567db8f8f834c40f5abcd79ea68639198b70ae8aeea6b4c0ab1614",
        "07 prune": "aff70991ff2095d8d388717caa0aeb8b5df736005511853f878a51ae02eff236",
        "08 quantize": "245b7c4c18e4e3e159b06cb0c6a9d2b70923775f376467bdbd9c2d5ba4091139",
        "09 quantize": "4122e86f62eac17aeb17e6d311f9b65e45b44108acb4a432c6bcca1b5b2af285",
        "10 quantize": "67c8caf98100b21384d182722bda27e535c4ecf7da1e16bf1f601f7e7a4a7ba9",
        "11 quantize": "3112a50d5fb849a8e2c96a0f56f0edf76203ab174668d15a92b8a179ee19c8b4",
        "12 evaluate": "befc73f6541d1bc5f6c6ccc84e011ffeb6bdf8887c59126d73570031ec9b8946",
        "13 evaluate": "198457b8125fa403c0f2e96ec9b71680220cd72ef9a22c0e163913ed2c688ac6",
        "14 evaluate": "498c324fea119c134701186bea00a8bfba3f7aed9e8f25ab3b7c5ea1e98c623a",
        "15 evaluate": "9657f2348d8d262d3a43c22f4efce6929a855ad64bbd4bf6ffbf81ada79437db",
        "16 package": "79615e050e27c17b62b3cc7ea001bbcb430bca79a58fcd296c6a19599fc58f14",
    },
    "no-distillation": {
        "00 data": "66f2f5e87257aea8f33fe04a3c7eeb22982d805f975c5679d3bb222ab746ab2a",
        "01 distill": "86fa8fbdd2567db8f8f834c40f5abcd79ea68639198b70ae8aeea6b4c0ab1614",
        "02 prune": "6505727d305083bc60ba6e970aea02c05d6b7f1b3d0cde23c66c2a7eedde1038",
        "03 quantize": "f8970be9f0504f3d31ce201949480cc13133a5faccfd9190c3b245a6743ce3f5",
        "04 quantize": "fcfa23582f82e4f5b64b3d435eeb7c46c6012f2e4d81ec9ae76255a46c1549aa",
        "05 evaluate": "0a6ed26dab39846c8e3b6b39cb5521a6a4d33ab2b499da5c14c9d67396d20d7f",
        "06 evaluate": "25c5079f2537192df7661f8b0d86fb1947520136a27c5ff4189fcf898c741353",
        "07 package": "e1299322e5b86003ccecb121e6bc4494dfdb21831c4274dd6f5ea8504c155632",
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_ids_are_unchanged(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for file, content in TEACHER_FILES.items():
        (tmp_path / file).write_bytes(content)
    assert recipe_ids(profiles()[name], monkeypatch, tmp_path) == EXPECTED[name]


@pytest.mark.parametrize("until, last", [("data", "00 data"), ("teacher", "01 teacher"), ("distill", "03 distill"), ("prune", "03 distill"), ("evaluate", "11 evaluate")])
def test_until_stops_after_that_step(until: str, last: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ids = recipe_ids(load_profile("default"), monkeypatch, tmp_path, until=until)
    assert list(ids) == list(EXPECTED["default"])[: list(EXPECTED["default"]).index(last) + 1]


def test_every_profile_is_pinned() -> None:
    assert set(EXPECTED) == set(profiles())


def test_a_recipe_ignore_drops_its_key_always_at_its_default_or_when_its_condition_holds() -> None:
    config = BuildProfile(name="x")
    recipe = {"a": {"b": 1, "c": 2, "d": 3}, "e": 4}
    RecipeIgnore("a.b").drop(recipe, config)
    RecipeIgnore("a.c", default=5).drop(recipe, config)  # not at its default: kept
    RecipeIgnore("a.d", default=3).drop(recipe, config)
    RecipeIgnore("e", when=lambda cfg: cfg.name == "y").drop(recipe, config)  # condition false: kept
    RecipeIgnore("a.missing").drop(recipe, config)
    RecipeIgnore("nowhere.at_all").drop(recipe, config)
    assert recipe == {"a": {"c": 2}, "e": 4}
    RecipeIgnore("e", when=lambda cfg: cfg.name == "x").drop(recipe, config)
    assert recipe == {"a": {"c": 2}}


if __name__ == "__main__":  # prints EXPECTED for the current code
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        for file, content in TEACHER_FILES.items():
            (Path(tmp) / file).write_bytes(content)
        json.dump({name: recipe_ids(p, mp, Path(tmp)) for name, p in profiles().items()}, sys.stdout, indent=4)
