"""User-facing errors.

Anything the user can fix (bad input, missing dataset, unreachable host) is raised as an
``EdgeshipError``. The CLI prints its message as one paragraph and exits non-zero, never with a
traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgeshipError(Exception):
    """A problem the user can fix. The message must name the file, key or host involved."""

    exit_code = 1


class ConfigError(EdgeshipError):
    """A profile, target or inventory file is missing, unreadable or invalid."""


class DataError(EdgeshipError):
    """A dataset is missing, truncated or malformed."""


class BundleError(EdgeshipError):
    """A bundle is incomplete or its files do not match the manifest hashes."""


class DeployError(EdgeshipError):
    """Deploying to or talking to a device failed."""


class ConversionError(EdgeshipError):
    """A model could not be converted between formats, or the converted model disagrees with its source."""
