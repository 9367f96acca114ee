"""Generator kinds: ``kind`` in a job file -> generator class.

Resolution order: the ``synth.generators`` entry-point group (the built-ins register there exactly
as a plugin package would, in its ``pyproject.toml``)::

    [project.entry-points."synth.generators"]
    my_kind = "my_package.module:MyGenerator"

then an import path given as the kind itself (``kind: my_package.module:MyGenerator``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from synth.errors import ConfigError
from synth.generators.base import Generator

ENTRY_POINT_GROUP = "synth.generators"


def _entry_points() -> dict[str, EntryPoint]:
    eps: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        eps.setdefault(ep.name, ep)  # first on sys.path wins, as for imports
    return eps


def available_generators() -> dict[str, str]:
    """Registered kinds and the class each names (without importing them)."""
    return {name: ep.value for name, ep in sorted(_entry_points().items())}


def _check_class(obj: Any, origin: str) -> type:
    missing = [
        a for a in ("kind", "Options", "generate", "setup", "partition_by", "arrow_schema") if not hasattr(obj, a)
    ]
    if not isinstance(obj, type) or missing:
        what = f"lacks {', '.join(missing)}" if isinstance(obj, type) else "is not a class"
        raise ConfigError(
            f"generator.kind: {origin} {what}; a generator class needs kind, Options, setup, "
            f"generate, partition_by and arrow_schema"
        )
    if not (isinstance(obj.Options, type) and issubclass(obj.Options, BaseModel)):
        raise ConfigError(f"generator.kind: {origin}.Options must be a pydantic model class")
    return obj


def get_generator(kind: str) -> type:
    """The generator class for ``kind``: a registered name, or 'pkg.module:Class'."""
    ep = _entry_points().get(kind)
    if ep is not None:
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin is reported, not crashed on
            raise ConfigError(
                f"generator.kind: {kind!r} is registered as {ep.value!r} but failed to import: {type(e).__name__}: {e}"
            ) from None
        return _check_class(obj, f"{kind!r} ({ep.value})")
    if ":" in kind:
        mod_name, _, attr = kind.partition(":")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise ConfigError(
                f"generator.kind: cannot import {mod_name!r} ({e}); install the package or fix the path"
            ) from None
        obj = getattr(mod, attr, None)
        if obj is None:
            raise ConfigError(f"generator.kind: module {mod_name!r} has no {attr!r}")
        return _check_class(obj, repr(kind))
    known = ", ".join(available_generators()) or "none registered"
    raise ConfigError(f"generator.kind: unknown generator {kind!r}; use one of: {known}, or 'package.module:Class'")


def create_generator(spec: Any, job: Any) -> Generator:
    """Build the generator a job names, validating its options (one line per problem)."""
    cls = get_generator(spec.kind)
    try:
        options = cls.Options.model_validate(spec.options)  # type: ignore[attr-defined]
    except ValidationError as e:
        from synth.spec import validation_lines

        raise ConfigError("\n".join(validation_lines(e, prefix="generator"))) from None
    return cls(options, job=job)  # type: ignore[no-any-return]


__all__ = ["ENTRY_POINT_GROUP", "available_generators", "create_generator", "get_generator"]
