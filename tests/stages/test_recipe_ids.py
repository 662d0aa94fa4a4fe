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
        "01 teacher": "b1458724dcbded6bfc0db62a82a00b4ad336f28189b44536bfaf2b90ac791d87",
        "02 distill": "7db9751628a967a324b39792f9b26a9dbbd9c5aed46a5cfa40929d4a6cd04167",
        "03 distill": "c1986c5a10674676ef67e0e8c07b8e902e3c0d4c130f3322c21640effc7ec77b",
        "04 quantize": "052b2f5ff968bdb325fa569b1e46d478364bb1d3b1e903c168b66530a375b6cf",
        "05 quantize": "86ed84907ec6eb11cc125882ec2f86fa36a7768fe5d382dc400f7da624b5c95c",
        "06 quantize": "e0263e2dbce8fb98b4b57c6baed64132e9466046003817b3812c568831c15b2e",
        "07 quantize": "af6c4d73a730441a422915f381b345185179ead2d1a3caa3efaf217be7fe7acc",
        "08 evaluate": "258d1858b1edd5d9f690aea46c2f3fba801c2e617d456745c73274dcdbdfbefc",
        "09 evaluate": "5b9e89dd906bf11979e01f5ad6164e018637d59c280588466e8283a3a0966bd0",
        "10 evaluate": "a38550a8d31328ddf1a1b61c63b6a4e2914f1e29effa0b80a677190d69067f95",
        "11 evaluate": "745af9fbf5ca9f0c116c6a5ef1a36eb636fc2a55f7239fa0678e5579983d28f2",
        "12 package": "d90f48384a8c459ef3e0600839f268559890a1b17fd5cf5d02f2f8ac64283586",
    },
    "quick": {
        "00 data": "66f2f5e87257aea8f33fe04a3c7eeb22982d805f975c5679d3bb222ab746ab2a",
        "01 teacher": "eb82e54e5e4d71047a52b31be50550a54c1613b69496b567d2910de15f23fca7",
        "02 distill": "51af9fe64d9439e916c1d6e09ef6cbe21ff9310939f168276017f53cbcedf9b1",
        "03 distill": "56753da00a425f7feaf9c4ca1fe881ecf7c28bdd800e9de3fa03cc856d058aed",
        "04 quantize": "052b2f5ff968bdb325fa569b1e46d478364bb1d3b1e903c168b66530a375b6cf",
        "05 quantize": "86ed84907ec6eb11cc125882ec2f86fa36a7768fe5d382dc400f7da624b5c95c",
        "06 quantize": "e0263e2dbce8fb98b4b57c6baed64132e9466046003817b3812c568831c15b2e",
        "07 quantize": "88a48ca989ab257d877107e43405616e3d03552cf2c3559760a4c606d79448c7",
        "08 evaluate": "258d1858b1edd5d9f690aea46c2f3fba801c2e617d456745c73274dcdbdfbefc",
        "09 evaluate": "5b9e89dd906bf11979e01f5ad6164e018637d59c280588466e8283a3a0966bd0",
        "10 evaluate": "a38550a8d31328ddf1a1b61c63b6a4e2914f1e29effa0b80a677190d69067f95",
        "11 evaluate": "745af9fbf5ca9f0c116c6a5ef1a36eb636fc2a55f7239fa0678e5579983d28f2",
        "12 package": "dd6ecebfad9c20cecbf7453ff01aee84cfd6fad9a9258bfa5768cfe30c4d7cee",
    },
    "squeezenet": {
        "00 data": "328f6b6fa1b4c49de2393f6ef77286cb2cbb51a915b6599871d4c9f90a0d926a",
        "01 teacher": "b1458724dcbded6bfc0db62a82a00b4ad336f28189b44536bfaf2b90ac791d87",
        "02 distill": "7be6ebc3de0aa3f92cd02337ac868bc4e9cd414ceb834d7678938ef76947eac1",
        "03 distill": "3ef13fe0740253f20c0a1ade480960ddf526fbc2146852d545f66ccb62a0ed13",
        "04 quantize": "052b2f5ff968bdb325fa569b1e46d478364bb1d3b1e903c168b66530a375b6cf",
        "05 quantize": "bb55abebf3fa05fef5c7f8a74508d78b2ede81d8e0c3f25fb97788b11e9f5b49",
        "06 evaluate": "258d1858b1edd5d9f690aea46c2f3fba801c2e617d456745c73274dcdbdfbefc",
        "07 evaluate": "5b9e89dd906bf11979e01f5ad6164e018637d59c280588466e8283a3a0966bd0",
        "08 package": "ccbdee8d76e27e603d019fd6e287ee490e9d68cdcbeca28dca2cecf7453ba3ba",
    },
    "everything": {
        "00 data": "66f2f5e87257aea8f33fe04a3c7eeb22982d805f975c5679d3bb222ab746ab2a",
        "01 data": "93f18c6cd9ab2b8464e3c0eea7ec257a6dfa42cdae45212b208b71bdfbd00ae0",
        "02 teacher": "c52fe5aa238af7938e347fc21bdc8717d0f626ee45276b1b58db2e00b2c323d7",
        "03 teacher": "9b798252b421a5897fac99a8722920966ec73abbcc29c2f802d60eb63ad8e61d",
        "04 distill": "37f44044878a35e14b5056fc1458567db9da0503fc682c47f0845f5182353645",
        "05 prune": "69cf75465095afd3d4944af57d25e0b55fae14411db1442ade36708b3a84bb50",
        "06 quantize": "29780b71150e46cd4ce834cd58e20ac8acc1ee0e8423c65368297c2faa0d94d3",
        "07 quantize": "ec3f7448bf9735b41cf1f75dda033af72d6e01c2d8b966b69c0934dc7c4e91fd",
        "08 quantize": "55ef1631a4535d6bc06afc1e0e620b35fd1c50272c65b28b1dab233412faa826",
        "09 evaluate": "91315dce56d26e17e4325ec437da0d08371b39ca73a041e894145e629bde390a",
        "10 evaluate": "ce98aad557ddbd08b7d5a4ae9356f73d3a0cfe4f5c31639187eb6ebffa086e8e",
        "11 evaluate": "94411db2aeeb7ae24e1e5ea4d972e89ace2e79870061f4c0fd612439f50af4d6",
        "12 export_onnx": "616aa7f51567e8b0378d06c277967d087b82ba31ce191fe8b990bba80d3e238d",
        "13 package": "006bc5863ba4dcfd6b70539ddc7c0a98e0ee39da518a2662e4c21b61d9bba7a7",
    },
    "onnx-teacher": {
        "00 data": "66f2f5e87257aea8f33fe04a3c7eeb22982d805f975c5679d3bb222ab746ab2a",
        "01 onnx_import": "b97f64163fe9fd35d5ed0c6e377e18552e7a9995d1c92fda1f8395b54bf5ecc5",
        "02 teacher": "7686e56a511690d05b07ac52ccb09ca4477b93537a162da582024191093474bc",
        "03 onnx_import": "9e2835e3ae7a8c087ec181b183611ad15c321d2f5b82ae0a12807774584967a2",
        "04 teacher": "8ba191551c33547125dd61c603029ade8f6d1e6f95c05a78b09f5466405af0d5",
        "05 distill": "67f942d7c38de40b760439fbe9dca9a86d85a78e0942778bc40c376302db0679",
        "06 distill": "56753da00a425f7feaf9c4ca1fe881ecf7c28bdd800e9de3fa03cc856d058aed",
        "07 prune": "9688ebcb48f16c42bd698ff9e55d41a4f08e75a02bc6e4a0f36400ca0c90f7c7",
        "08 quantize": "245b7c4c18e4e3e159b06cb0c6a9d2b70923775f376467bdbd9c2d5ba4091139",
        "09 quantize": "4122e86f62eac17aeb17e6d311f9b65e45b44108acb4a432c6bcca1b5b2af285",
        "10 quantize": "67c8caf98100b21384d182722bda27e535c4ecf7da1e16bf1f601f7e7a4a7ba9",
        "11 quantize": "3112a50d5fb849a8e2c96a0f56f0edf76203ab174668d15a92b8a179ee19c8b4",
        "12 evaluate": "befc73f6541d1bc5f6c6ccc84e011ffeb6bdf8887c59126d73570031ec9b8946",
        "13 evaluate": "198457b8125fa403c0f2e96ec9b71680220cd72ef9a22c0e163913ed2c688ac6",
        "14 evaluate": "498c324fea119c134701186bea00a8bfba3f7aed9e8f25ab3b7c5ea1e98c623a",
        "15 evaluate": "9657f2348d8d262d3a43c22f4efce6929a855ad64bbd4bf6ffbf81ada79437db",
        "16 package": "646c18e1c17493a14279e8f6ded02df17d876b808730ff15a3303c556a01bc63",
    },
    "no-distillation": {
        "00 data": "66f2f5e87257aea8f33fe04a3c7eeb22982d805f975c5679d3bb222ab746ab2a",
        "01 distill": "56753da00a425f7feaf9c4ca1fe881ecf7c28bdd800e9de3fa03cc856d058aed",
        "02 prune": "551e445ab6ec0c524053a8570c73bf16b370305b2cf5b26421d00dab59a7bf60",
        "03 quantize": "f8970be9f0504f3d31ce201949480cc13133a5faccfd9190c3b245a6743ce3f5",
        "04 quantize": "fcfa23582f82e4f5b64b3d435eeb7c46c6012f2e4d81ec9ae76255a46c1549aa",
        "05 evaluate": "0a6ed26dab39846c8e3b6b39cb5521a6a4d33ab2b499da5c14c9d67396d20d7f",
        "06 evaluate": "25c5079f2537192df7661f8b0d86fb1947520136a27c5ff4189fcf898c741353",
        "07 package": "e68d336f5f0bf6df8bb05bc21f09fc33093802b8a40eb71f7ee07eec20ac256e",
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


def test_student_seed_trains_new_students_and_only_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base = load_profile("default")

    def with_seed(seed: int) -> BuildProfile:
        return base.model_copy(update={"student": base.student.model_copy(update={"seed": seed})})

    plain = recipe_ids(base, monkeypatch, tmp_path)
    spelled_out = recipe_ids(with_seed(base.seed), monkeypatch, tmp_path)  # the profile's own seed, written down
    # the same models; only the bundle differs, as its provenance records the profile's hash
    assert {k: v for k, v in spelled_out.items() if "package" not in k} == {k: v for k, v in plain.items() if "package" not in k}
    other = recipe_ids(with_seed(base.seed + 1), monkeypatch, tmp_path)
    changed = {key.split()[1] for key in plain if plain[key] != other[key]}
    assert other["00 data"] == plain["00 data"] and other["01 teacher"] == plain["01 teacher"]
    assert "distill" in changed and changed <= {"distill", "quantize", "evaluate", "package"}


def test_a_student_training_option_retrains_the_students_and_not_the_teacher(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base = load_profile("default")
    training = base.student.training.model_copy(update={"erasing": 0.5})
    erased = recipe_ids(base.model_copy(update={"student": base.student.model_copy(update={"training": training})}), monkeypatch, tmp_path)
    plain = recipe_ids(base, monkeypatch, tmp_path)
    assert erased["01 teacher"] == plain["01 teacher"]
    assert erased["02 distill"] != plain["02 distill"] and erased["03 distill"] != plain["03 distill"]


def test_clustering_alone_ignores_pruning_fine_tune_but_its_batch_size(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base = load_profile("default").model_dump(mode="json")
    base["clustering"] = {"enabled": True}

    def prune_id(**fine_tune: Any) -> str:
        data = json.loads(json.dumps(base))
        data["pruning"]["fine_tune"].update(fine_tune)
        ids = recipe_ids(validate(BuildProfile, data, "clustered"), monkeypatch, tmp_path)
        return next(v for k, v in ids.items() if k.endswith("prune"))

    plain = prune_id()
    assert prune_id(epochs=3, learning_rate=0.01, augment=False) == plain
    assert prune_id(batch_size=64) != plain
    base["pruning"]["method"] = "structured"  # pruning fine-tunes with all of it
    assert prune_id(epochs=3) != prune_id()
