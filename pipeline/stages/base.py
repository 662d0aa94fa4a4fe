"""Stages, recipe ids and the content-addressed artifact cache.

A stage's recipe id is the sha256 of canonical JSON of {stage name, stage version, config, input
artifact ids}. Its outputs live in ``results/cache/<stage>/<recipe id>/`` and are written through
``atomic_directory``: a directory there with a ``meta.json`` is complete by construction, so a
killed run leaves nothing a later run could mistake for a finished artifact.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Mapping, Optional, TypeVar

from pydantic import BaseModel

from pipeline.clock import utc_seconds_z
from pipeline.fsutil import atomic_directory, canonical_json, sha256_bytes
from pipeline.paths import cache_dir
from pipeline.progress import NullProgress, Progress

log = logging.getLogger(__name__)

META = "meta.json"

ConfigT = TypeVar("ConfigT", bound=BaseModel)

_ANY_VALUE = object()


@dataclass(frozen=True)
class RecipeIgnore:
    """A dotted config key a stage's recipe id leaves out: always, only while it holds ``default``
    (its value in the JSON dump), and/or only when ``when(config)`` holds for the stage's config.

    Keys that do not change what a stage produces must stay out of its recipe, or changing them
    would throw away cached artifacts (trained models) for nothing.
    """

    key: str
    default: Any = _ANY_VALUE
    when: Optional[Callable[[Any], bool]] = None

    def drop(self, recipe: dict[str, Any], config: BaseModel) -> None:
        """Delete the key from the dumped ``recipe`` if it is there and this entry applies."""
        *parents, leaf = self.key.split(".")
        node: Any = recipe
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            return
        if self.default is not _ANY_VALUE and node[leaf] != self.default:
            return
        if self.when is not None and not self.when(config):
            return
        del node[leaf]


@dataclass(frozen=True)
class Artifact:
    """A finished stage output: a directory in the cache plus what the stage recorded about it."""

    stage: str
    recipe_id: str
    path: Path
    meta: Mapping[str, Any]
    cached: bool = False

    @property
    def metrics(self) -> Mapping[str, Any]:
        return self.meta.get("metrics", {})

    @property
    def seconds(self) -> float:
        return float(self.meta.get("seconds", 0.0))


@dataclass
class RunContext:
    """What every stage run shares: where the cache is and who is watching."""

    progress: Progress = field(default_factory=NullProgress)
    cache_root: Optional[Path] = None

    @property
    def root(self) -> Path:
        return self.cache_root or cache_dir()


class Stage(ABC, Generic[ConfigT]):
    """One step of the pipeline. Subclasses set ``name``, ``description``, ``version``, implement
    ``run`` and register with ``pipeline.stages.registry.register_stage``.

    ``ConfigT`` is the stage's pydantic config, so ``self.config`` is typed in ``run``.

    Bump ``version`` whenever the code changes what a stage produces, so old cache entries stop
    matching instead of being silently reused.
    """

    name: ClassVar[str]
    description: ClassVar[str]  # one line, for ``edgeship stage --help``
    version: ClassVar[int]
    inputs: ClassVar[tuple[str, ...]] = ()
    # The one place a stage declares which config keys its recipe id ignores (and why, beside each).
    recipe_ignores: ClassVar[tuple[RecipeIgnore, ...]] = ()
    # Training stages set 1: they may run on a cluster worker, one per core it offers.
    cores: ClassVar[int] = 0

    def __init__(self, config: ConfigT) -> None:
        self.config: ConfigT = config

    def task_cores(self) -> int:
        """Cores this stage asks of a cluster worker; 0 keeps it on the client (quick stages, and
        stages that read files of the client's own: datasets, user-supplied models)."""
        return type(self).cores

    def config_json(self) -> dict[str, Any]:
        """The config as the recipe id (and meta.json) sees it: dumped, minus ``recipe_ignores``."""
        recipe = self.config.model_dump(mode="json")
        for ignore in self.recipe_ignores:
            ignore.drop(recipe, self.config)
        return recipe

    def recipe_id(self, inputs: Mapping[str, Artifact]) -> str:
        missing = set(self.inputs) - set(inputs)
        if missing:
            raise ValueError(f"stage {self.name} is missing inputs {sorted(missing)}")
        recipe = {
            "stage": self.name,
            "version": self.version,
            "config": self.config_json(),
            "inputs": {key: inputs[key].recipe_id for key in sorted(self.inputs)},
        }
        return sha256_bytes(canonical_json(recipe).encode("utf-8"))

    @abstractmethod
    def run(self, inputs: Mapping[str, Artifact], out: Path, ctx: RunContext) -> dict[str, Any]:
        """Write outputs into ``out`` and return metrics to record in meta.json."""


def load_artifact(stage: str, recipe_id: str, root: Path) -> Optional[Artifact]:
    path = root / stage / recipe_id
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return Artifact(stage=stage, recipe_id=recipe_id, path=path, meta=meta, cached=True)


def run_stage(stage: Stage, inputs: Mapping[str, Artifact], ctx: RunContext) -> Artifact:
    """Return the cached artifact for this recipe, or run the stage and cache its outputs."""
    recipe_id = stage.recipe_id(inputs)
    hit = load_artifact(stage.name, recipe_id, ctx.root)
    if hit is not None:
        log.info("%s: cache hit %s", stage.name, recipe_id[:12])
        return hit
    final = ctx.root / stage.name / recipe_id
    log.info("%s: running recipe %s", stage.name, recipe_id[:12])
    started = time.perf_counter()
    with atomic_directory(final) as tmp:
        metrics = stage.run(inputs, tmp, ctx)
        meta = {
            "stage": stage.name,
            "version": stage.version,
            "recipe_id": recipe_id,
            "config": stage.config_json(),
            "inputs": {key: inputs[key].recipe_id for key in stage.inputs},
            "metrics": metrics,
            "seconds": round(time.perf_counter() - started, 3),
            # 2026-12-02T22:30:00Z, as before (pipeline/bench/build_bench.py parses it back)
            "finished": utc_seconds_z(),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return Artifact(stage=stage.name, recipe_id=recipe_id, path=final, meta=meta, cached=False)
