"""The stage registry: every stage is in it, and ``edgeship stage --help`` lists it from there."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

import pipeline.stages as package
from pipeline.build import STAGE_NAMES
from pipeline.cli import main
from pipeline.stages.base import Stage
from pipeline.stages.registry import descriptions, register_stage, stages


def test_every_stage_class_in_the_package_is_registered_under_its_name() -> None:
    registered = stages()
    defined = []
    for module in pkgutil.iter_modules(package.__path__):
        mod = importlib.import_module(f"{package.__name__}.{module.name}")
        defined += [cls for _, cls in inspect.getmembers(mod, inspect.isclass) if issubclass(cls, Stage) and cls is not Stage and cls.__module__ == mod.__name__]
    assert defined and all(registered[cls.name] is cls for cls in defined)
    assert set(STAGE_NAMES) <= set(registered), "the build stops after a stage the registry does not know"


def test_a_second_stage_with_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'data' is taken"):
        @register_stage
        class Impostor(Stage[BaseModel]):
            name = "data"
            description = "Not the real one."
            version = 1

            def run(self, inputs, out, ctx):
                return {}


def test_a_stage_without_a_one_line_description_is_refused() -> None:
    with pytest.raises(ValueError, match="one-line description"):
        @register_stage
        class Mute(Stage[BaseModel]):
            name = "mute"
            version = 1

            def run(self, inputs, out, ctx):
                return {}


def test_stage_help_lists_every_stage_with_its_description() -> None:
    result = CliRunner().invoke(main, ["stage", "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    for name, text in descriptions().items():
        assert any(line.split() == [name, *text.split()] for line in result.output.splitlines()), name


def test_stage_refuses_a_name_the_build_cannot_stop_after() -> None:
    result = CliRunner().invoke(main, ["stage", "onnx_import"])
    assert result.exit_code == 2 and "'onnx_import' is not one of 'data'" in result.output
