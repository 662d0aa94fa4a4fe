"""Which tflite-runtime release a device can install from PyPI: a small table of facts, and the pick.

tflite-runtime's last release is 2.14.0, and which release a device can use depends on more than its
Python: the ARM wheels of 2.12.0 and 2.14.0 need glibc 2.34 (Debian bullseye has 2.31), every
release was built against numpy 1.x (numpy 2 cannot load it), and each one needs a numpy at least
as new as the one it was built against. PyPI has no numpy wheels for 32-bit ARM, so on a Pi the
release should fit the numpy the device already has rather than pull a numpy pip would compile.

The table was read off PyPI's Linux wheels of every release (2.5.0 to 2.14.0): their tags
(``pip download -vv`` lists every file of the project), ``Requires-Dist: numpy`` in each wheel's
METADATA, and the newest ``GLIBC_`` symbol version their extension modules need. 2.12.0's ARM
wheels are tagged manylinux2014 but need GLIBC_2.34 (and GLIBCXX_3.4.29), so the symbols, not the
tag, decide. There was no 2.6 on PyPI; 2.5.0 has Linux wheels for armv7l only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

Version = tuple[int, ...]

ARM = ("aarch64", "armv7l")


@dataclass(frozen=True)
class Wheels:
    """The Linux wheels of one release for some architectures."""

    release: str
    arches: tuple[str, ...]
    pythons: tuple[tuple[int, int], ...]  # CPython versions with a wheel
    glibc: tuple[int, int]  # the newer of the wheel tag's glibc and the newest GLIBC_ symbol it needs
    numpy: Version  # Requires-Dist floor; numpy 2 cannot load any release (all built against numpy 1.x)


def _pythons(first: int, last: int) -> tuple[tuple[int, int], ...]:
    return tuple((3, minor) for minor in range(first, last + 1))


#: Newest release first.
TFLITE_RUNTIME_WHEELS: tuple[Wheels, ...] = (
    Wheels("2.14.0", ARM, _pythons(8, 11), (2, 34), (1, 23, 2)),  # tagged manylinux_2_34
    Wheels("2.14.0", ("x86_64",), _pythons(8, 11), (2, 29), (1, 23, 2)),
    Wheels("2.13.0", ARM, _pythons(8, 10), (2, 27), (1, 21, 2)),
    Wheels("2.13.0", ("x86_64",), _pythons(8, 10), (2, 29), (1, 21, 2)),
    Wheels("2.12.0", ARM, _pythons(8, 9), (2, 34), (1, 19, 2)),  # tagged manylinux2014, needs GLIBC_2.34
    Wheels("2.12.0", ("x86_64",), _pythons(8, 9), (2, 27), (1, 19, 2)),
    *(Wheels(release, ARM + ("x86_64",), _pythons(7, 9), (2, 27), (1, 19, 2)) for release in ("2.11.0", "2.10.0", "2.9.1", "2.8.0")),
    Wheels("2.7.0", ARM, _pythons(7, 9), (2, 27), (1, 19, 2)),
    Wheels("2.7.0", ("x86_64",), _pythons(7, 9), (2, 17), (1, 19, 2)),
    Wheels("2.5.0", ("armv7l",), ((3, 7),), (2, 27), (1, 12, 1)),  # tagged linux_armv7l
    Wheels("2.5.0", ("armv7l",), ((3, 8),), (2, 29), (1, 12, 1)),
)

#: The python3-numpy that apt installs, by the glibc of the Debian release (Raspberry Pi OS is the
#: same): bullseye 2.31 and bookworm 2.36, as the emulated Pis' root filesystems carry them.
DEBIAN_NUMPY_BY_GLIBC: dict[tuple[int, int], Version] = {(2, 31): (1, 19, 5), (2, 36): (1, 24, 2)}


@dataclass(frozen=True)
class RuntimePick:
    """What to pip-install: ``tflite-runtime==X`` and, when the device's numpy does not fit, a numpy."""

    release: str
    numpy: Optional[str] = None  # a requirement such as ``numpy>=1.23.2,<2``; None when the device's numpy fits

    @property
    def requirements(self) -> list[str]:
        return [f"tflite-runtime=={self.release}"] + ([self.numpy] if self.numpy else [])


def version_tuple(text: Optional[str]) -> Optional[Version]:
    """``"3.11.2"`` -> (3, 11, 2), ``"2.0.0rc1"`` -> (2, 0, 0); None when it does not start with a number."""
    if not text:
        return None
    parts: list[int] = []
    for piece in str(text).split()[0].split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts) or None


def pick_tflite_runtime(
    arch: str,
    python: Optional[str],
    *,
    glibc: Optional[str] = None,
    numpy: Optional[str] = None,
    numpy_floor: Version = (1, 16),
) -> Optional[RuntimePick]:
    """The release to install on a device (None: no wheel for this Python and architecture).

    ``numpy`` is the version the device has (or will have from apt); ``numpy_floor`` is what the
    caller needs besides the release's own floor. Prefers the newest release whose numpy floor the
    device's numpy 1.x already meets; otherwise the newest release, with a numpy requirement.
    An unknown glibc counts as old: wheels that need glibc 2.34 are chosen only when nothing else fits.
    """
    py = version_tuple(python)
    if py is None or len(py) < 2:
        return None
    rows = [w for w in TFLITE_RUNTIME_WHEELS if arch in w.arches and py[:2] in w.pythons]
    device_glibc = version_tuple(glibc)
    if device_glibc is not None:
        rows = [w for w in rows if device_glibc[:2] >= w.glibc]
    else:
        rows = [w for w in rows if w.glibc < (2, 34)] or rows
    if not rows:
        return None
    have = version_tuple(numpy)
    if have is not None and have < (2,):
        for wheels in rows:
            if have >= max(wheels.numpy, numpy_floor):
                return RuntimePick(wheels.release)
    newest = rows[0]
    floor = ".".join(str(n) for n in max(newest.numpy, numpy_floor))
    return RuntimePick(newest.release, f"numpy>={floor},<2")


def apt_numpy(glibc: Optional[str]) -> Optional[str]:
    """The numpy ``apt install python3-numpy`` brings on a Debian release with this glibc, if known."""
    found = version_tuple(glibc)
    numpy = DEBIAN_NUMPY_BY_GLIBC.get(found[:2]) if found and len(found) >= 2 else None
    return ".".join(str(n) for n in numpy) if numpy else None
