"""Plugins: one lookup for every kind a job file names by name.

Five groups, each an entry-point group; the built-ins register in synth's own ``pyproject.toml``
exactly as a plugin package does in its own::

    [project.entry-points."synth.providers"]      # providers[].model: '<kind>:<model>'
    echo = "my_package.echo:make_provider"
    [project.entry-points."synth.generators"]     # generator.kind
    [project.entry-points."synth.instructions"]   # generator.instructions.kind (conversation)
    [project.entry-points."synth.modifiers"]      # generator.modifiers[].kind (conversation)
    [project.entry-points."synth.retrievers"]     # generator.modifiers[].retriever.kind (rag)

A name that is not registered may be an import path instead, ``package.module:Class`` (for a
provider, ``package.module:Class:model``). Lookups fail in one line naming the field, the unknown
name and the registered names; a plugin that fails to import is reported the same way, and a
broken plugin never stops the others from loading (only the one asked for is imported).

Provider plugins
----------------

The entry point names a callable taking the job's provider entry (:class:`synth.spec.ProviderSpec`:
``model``, ``base_url``, ``params``, ``client``, ...) and returning a
:class:`synth.providers.base.Provider`: a factory function, a class whose constructor takes the
spec, or a class with a ``from_spec(spec)`` classmethod. A provider has ``kind`` and ``model``
attributes and three coroutines:

* ``complete(request, key, *, timeout) -> Completion``: one call with one key (``key.secret``;
  ``None`` for a keyless provider); fill ``text`` (or ``parsed`` when ``request.json_schema`` is
  set), ``usage``, ``finish_reason`` and, when the API sends rate-limit headers, ``ratelimit``;
  raise a :class:`synth.errors.ProviderError` subclass on failure (``RateLimited`` and ``Transient``
  are retried, ``AuthError`` disables the key, ``MalformedOutput`` re-asks);
* ``embed(request, key, *, timeout) -> Embeddings`` (raise ``ProviderError`` if unsupported);
* ``aclose()``: release clients.

Key pools, rate limits, retries, re-asks, budget, pricing (``price:`` in the job file) and routing
wrap every provider alike. Import SDKs inside the factory, not at module level, so a job that does
not use the kind never loads them.

Other groups
------------

The rest name classes. Their job-file fields other than ``kind`` are validated by the class's
``Options`` (a pydantic model) when it has one, one line per problem; else passed as a dict.

* generators (``synth.generators.registry``): ``kind``, ``Options``, ``setup``, ``generate``,
  ``partition_by``, ``arrow_schema`` (:class:`synth.generators.base.Generator`);
* instruction sources: ``cls(options, job)`` with ``check(count)``, ``async setup(ctx)`` and
  ``async instruction(unit, ctx) -> Instruction`` (:mod:`synth.generators.instructions`);
* prompt modifiers: ``cls(options, job, where)`` with ``async setup(ctx)``, ``async modify(shaped,
  query, unit, ctx)``, ``async on_turn(...)`` and ``async aclose()`` (:mod:`synth.generators.modifiers`);
* retrievers: see :mod:`synth.retrieval.registry`.

This module is in the base layer (the job file validates provider kinds with it): it needs only
the standard library and :mod:`synth.errors`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from synth.errors import ConfigError

IMPORT_FORM = "'package.module:Class'"


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


class Registry:
    """The kinds of one entry-point group.

    ``check(obj, origin)`` validates what a name loads to (raising a ConfigError whose text follows
    ``origin``) and returns the object to use."""

    def __init__(self, group: str, *, field: str, what: str, check: Callable[[Any, str], Any] | None = None) -> None:
        self.group = group
        self.field = field
        self.what = what
        self.check = check
        self._scans: dict[tuple[str, ...], dict[str, EntryPoint]] = {}
        self._loaded: dict[tuple[str, str], Any] = {}

    def entries(self, *, fresh: bool = False) -> dict[str, EntryPoint]:
        """Registered names and their entry points, scanned once per ``sys.path`` (``fresh``: again,
        for a name not found: a package may have been installed since)."""
        key = tuple(sys.path)
        eps = None if fresh else self._scans.get(key)
        if eps is None:
            eps = {}
            for ep in entry_points(group=self.group):
                eps.setdefault(ep.name, ep)  # first on sys.path wins, as for imports
            self._scans = {key: eps}
        return eps

    def names(self) -> dict[str, str]:
        """Registered names and the object each names (``module:attr``), without importing them."""
        return {name: ep.value for name, ep in sorted(self.entries().items())}

    def registered(self, name: str) -> bool:
        return name in self.entries() or name in self.entries(fresh=True)

    def is_known(self, name: str) -> bool:
        """A registered name, or something shaped like an import path (not imported here)."""
        return name in self.entries() or is_import_path(name) or name in self.entries(fresh=True)

    def known_kind(self, value: Any) -> Any:
        """A pydantic before-validator for a ``{kind: ...}`` union with plugin members: refuses a
        kind that is neither registered nor an import path, naming the registered ones."""
        kind = value.get("kind") if isinstance(value, dict) else None
        if isinstance(kind, str) and not self.is_known(kind):
            known = ", ".join(self.names()) or "none registered"
            raise ValueError(f"Input tag {kind!r} is not a known {self.what}; use one of: {known}, or {IMPORT_FORM}")
        return value

    def unknown(
        self, name: str, *, field: str | None = None, context: str = "", form: str = IMPORT_FORM
    ) -> ConfigError:
        known = ", ".join(self.names()) or "none registered"
        return ConfigError(
            f"{_prefix(field, self.field)}unknown {self.what} {name!r}{context}; use one of: {known}, or {form}"
        )

    def load(self, name: str, *, field: str | None = None) -> Any:
        """What ``name`` names: a registered name first, then a ``package.module:attr`` path."""
        prefix = _prefix(field, self.field)
        ep = self.entries().get(name)
        if ep is None and not is_import_path(name):
            ep = self.entries(fresh=True).get(name)
        if ep is not None:
            hit = self._loaded.get((name, ep.value))
            if hit is not None:
                return hit
            try:
                obj = ep.load()
            except Exception as e:  # noqa: BLE001 - a broken plugin is reported, not crashed on
                raise ConfigError(
                    f"{prefix}{name!r} is registered as {ep.value!r} but failed to import: {_one_line(e)}"
                ) from None
            obj = self.check(obj, f"{prefix}{name!r} ({ep.value})") if self.check else obj
            self._loaded[(name, ep.value)] = obj
            return obj
        if not is_import_path(name):
            raise self.unknown(name, field=field)
        mod_name, _, attr = name.partition(":")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise ConfigError(
                f"{prefix}cannot import {mod_name!r} ({e}); install the package or fix the path"
            ) from None
        except Exception as e:  # noqa: BLE001 - the module itself is broken
            raise ConfigError(f"{prefix}{mod_name!r} failed to import: {_one_line(e)}") from None
        obj = getattr(mod, attr, None)
        if obj is None:
            raise ConfigError(f"{prefix}module {mod_name!r} has no {attr!r}")
        return self.check(obj, f"{prefix}{name!r}") if self.check else obj


def _prefix(field: str | None, default: str) -> str:
    f = default if field is None else field
    return f"{f}: " if f else ""


def is_import_path(name: str) -> bool:
    mod, sep, attr = name.partition(":")
    return bool(sep) and all(p.isidentifier() for p in mod.split(".")) and attr.isidentifier()


def options_of(cls: Any, raw: dict[str, Any], where: str) -> Any:
    """``raw`` validated by ``cls.Options`` (a pydantic model) when the class declares one, one line
    per problem prefixed ``where``; the dict as given otherwise."""
    model = getattr(cls, "Options", None)
    if model is None:
        return raw
    from pydantic import ValidationError

    try:
        return model.model_validate(raw)
    except ValidationError as e:
        from synth.spec import validation_lines

        raise ConfigError("\n".join(validation_lines(e, prefix=where))) from None


# ---------------------------------------------------------------- providers


def _provider_factory(obj: Any, origin: str) -> Callable[[Any], Any]:
    make = getattr(obj, "from_spec", obj)
    if not callable(make):
        raise ConfigError(
            f"{origin} is not callable; a provider plugin names a factory taking the provider spec, "
            "or a class (see synth.plugins)"
        )
    return make


PROVIDERS = Registry("synth.providers", field="", what="provider prefix", check=_provider_factory)


def provider_kinds() -> dict[str, str]:
    """Registered provider kinds and the factory each names."""
    return PROVIDERS.names()


def split_model(text: str) -> tuple[str, str]:
    """``(kind, model)`` of ``kind:model`` with a registered kind, or of
    ``package.module:Class:model`` (the kind is then ``package.module:Class``); one-line errors."""
    head, sep, rest = text.partition(":")
    kind = head.strip().lower()
    if sep and not PROVIDERS.registered(kind):  # maybe an import path: the kind is 'package.module:Class'
        attr, sep2, model = rest.partition(":")
        if sep2 and is_import_path(f"{head.strip()}:{attr.strip()}"):
            kind, rest = f"{head.strip()}:{attr.strip()}", model
    if not sep or not rest.strip():
        raise ConfigError(
            f"model {text!r} is not of the form 'kind:model'; use e.g. 'openai:gpt-4o-mini', "
            f"'gemini:gemini-2.5-flash' or 'sim:default'"
        )
    if not PROVIDERS.is_known(kind):
        raise PROVIDERS.unknown(kind, context=f" in {text!r}", form="'package.module:Class:model'")
    return kind, rest.strip()


__all__ = [
    "IMPORT_FORM",
    "PROVIDERS",
    "Registry",
    "is_import_path",
    "options_of",
    "provider_kinds",
    "split_model",
]
