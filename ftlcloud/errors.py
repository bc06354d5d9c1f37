"""Exceptions and warnings. Every message names the file, item, tile or field and what to do."""


class FtlError(Exception):
    """Base of every error ftlcloud raises on purpose; the CLI maps subclasses to exit codes."""

    exit_code = 1


class InputError(FtlError):
    """A user input (file, raster, inventory, decisions, config) is unusable as given."""

    exit_code = 2


class ConfigError(InputError):
    """A configuration value or file is malformed."""


class StoreError(FtlError):
    """The store cannot be reached or written (endpoint down, bucket missing, credentials refused)."""

    exit_code = 3


class CatalogError(FtlError):
    """The STAC catalog is missing an expected collection or item, or is inconsistent."""

    exit_code = 4


class RunError(FtlError):
    """A pipeline run cannot proceed (locked run id, incomplete factors, failed tile)."""

    exit_code = 5


class FtlWarning(UserWarning):
    """Base of ftlcloud's warnings."""
