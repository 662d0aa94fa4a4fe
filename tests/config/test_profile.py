"""Build profiles: the shipped ones load, and mistakes are named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.profile import load_profile
from pipeline.errors import ConfigError
from pipeline.paths import builtin_profiles_dir


@pytest.mark.parametrize("path", sorted(builtin_profiles_dir().glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_profiles_load(path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem


def test_profile_by_name() -> None:
    assert load_profile("quick").student.family == "mobilenet_v2"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_misspelled_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nstudent:\n  famly: squeezenet\n")
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert "student.famly" in str(err.value) and str(path) in str(err.value)


def test_zero_calibration_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nquantization:\n  calibration_samples: 0\n")
    with pytest.raises(ConfigError, match=r"quantization.calibration_samples.*at least 1"):
        load_profile(path)


def test_ship_mode_must_be_built(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nquantization:\n  modes: [float32]\n  ship: int8\n")
    with pytest.raises(ConfigError, match="ship mode 'int8'"):
        load_profile(path)


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nstudent: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_profile(path)


def test_unknown_profile_name_lists_known() -> None:
    with pytest.raises(ConfigError, match="Known profiles:.*quick"):
        load_profile("no-such-profile")


def test_teacher_shift_is_bounded(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nteacher:\n  shift: 9\n")
    with pytest.raises(ConfigError, match=r"teacher.shift.*less than or equal to 4"):
        load_profile(path)
    assert load_profile(write(tmp_path, "name: x\nteacher:\n  shift: 2\n")).teacher.shift == 2


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("preprocessing", "mean", ".nan"),
        ("preprocessing", "scale", ".inf"),
        ("preprocessing", "std", ".inf"),
        ("preprocessing", "mean", "-.inf"),
        ("distillation", "temperature", ".nan"),
        ("acceptance", "max_tflite_kb", ".inf"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path: Path, section: str, key: str, value: str) -> None:
    path = write(tmp_path, f"name: x\n{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    message = str(err.value)
    assert str(path) in message and f"'{section}.{key}'" in message and "finite number" in message
    assert "\n" not in message


def test_erasing_and_label_smoothing_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"student.training.erasing.*less than or equal to 1"):
        load_profile(write(tmp_path, "name: x\nstudent:\n  training: {erasing: 1.5}\n"))
    with pytest.raises(ConfigError, match=r"teacher.training.label_smoothing.*less than 1"):
        load_profile(write(tmp_path, "name: x\nteacher:\n  training: {label_smoothing: 1.0}\n"))


def test_training_options_added_later_leave_dumps_alone_while_off(tmp_path: Path) -> None:
    """Dumps feed recipe ids and bundle provenance: an option that is off must not change them."""
    off = load_profile(write(tmp_path, "name: x\n")).model_dump(mode="json")
    assert "erasing" not in off["student"]["training"] and "label_smoothing" not in off["teacher"]["training"]
    on = load_profile(write(tmp_path, "name: x\nstudent:\n  training: {erasing: 0.5, label_smoothing: 0.1}\n"))
    dumped = on.model_dump(mode="json")["student"]["training"]
    assert dumped["erasing"] == 0.5 and dumped["label_smoothing"] == 0.1
    assert on.student.training.model_validate(dumped) == on.student.training  # a dump loads back as the same config
