"""Generator kinds: ``kind`` in a job file -> generator class.

Resolution order: the ``synth.generators`` entry-point group (the built-ins register there exactly
as a plugin package would, in its ``pyproject.toml``)::

    [project.entry-points."synth.generators"]
    my_kind = "my_package.module:MyGenerator"

then an import path given as the kind itself (``kind: my_package.module:MyGenerator``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from synth.errors import ConfigError
from synth.generators.base import Generator
from synth.plugins import Registry

ENTRY_POINT_GROUP = "synth.generators"


def _check_class(obj: Any, origin: str) -> type:
    missing = [
        a for a in ("kind", "Options", "generate", "setup", "partition_by", "arrow_schema") if not hasattr(obj, a)
    ]
    if not isinstance(obj, type) or missing:
        what = f"lacks {', '.join(missing)}" if isinstance(obj, type) else "is not a class"
        raise ConfigError(
            f"{origin} {what}; a generator class needs kind, Options, setup, generate, partition_by and arrow_schema"
        )
    options = getattr(obj, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise ConfigError(f"{origin}.Options must be a pydantic model class")
    return obj


GENERATORS = Registry(ENTRY_POINT_GROUP, field="generator.kind", what="generator", check=_check_class)


def available_generators() -> dict[str, str]:
    """Registered kinds and the class each names (without importing them)."""
    return GENERATORS.names()


def get_generator(kind: str) -> Any:
    """The generator class for ``kind``: a registered name, or 'pkg.module:Class'."""
    return GENERATORS.load(kind)


def create_generator(spec: Any, job: Any) -> Generator:
    """Build the generator a job names, validating its options (one line per problem)."""
    cls = get_generator(spec.kind)
    try:
        options = cls.Options.model_validate(spec.options)
    except ValidationError as e:
        from synth.spec import validation_lines

        raise ConfigError("\n".join(validation_lines(e, prefix="generator"))) from None
    return cls(options, job=job)


__all__ = ["ENTRY_POINT_GROUP", "GENERATORS", "available_generators", "create_generator", "get_generator"]
