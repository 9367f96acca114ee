"""Defaults files: settings written once (providers, key variable names, limits, routes, cache,
output root) and merged under every job file.

Where they are, highest precedence first (the job file itself is above them all):

1. ``./synth.yaml`` in the working folder (a project's settings);
2. the user file: ``$SYNTH_CONFIG`` when set, else ``${XDG_CONFIG_HOME:-~/.config}/synth/config.yaml``.

``SYNTH_CONFIG=none`` turns every defaults file off. How a higher file merges over a lower one:
mappings merge key by key at any depth; any other value (a list such as ``providers`` or
``output.partition_by``, a number, a string, ``null``) replaces the lower one whole; ``routes``
merge route by route, each route replaced whole. Providers and routes go together: a file that
names ``providers`` takes none of the routes below it (they name the providers it replaced).
``output.root``, written only in a defaults file, puts a relative ``output.uri`` under it (and a
job that gives no ``output.uri`` at ``<root>/<job name>``). ``${VAR}`` and ``${VAR:-default}``
are filled in from the environment as in job files.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from synth.errors import ConfigError
from synth.spec import JobSpec, format_loc, substitute, unknown_protocol

PROJECT_FILE = "synth.yaml"
OFF = "none"  # SYNTH_CONFIG=none: no defaults files at all
# a defaults file is validated merged under this stand-in for a job (a job's own fields)
_STUB: dict[str, Any] = {"name": "defaults", "count": 1, "generator": {"kind": "structured"}}


@dataclass(frozen=True)
class Source:
    """One file that contributed: its role (``user``, ``SYNTH_CONFIG``, ``project`` or ``job``) and path."""

    role: str
    path: str


@dataclass
class Defaults:
    """The defaults files found, lowest precedence first, each parsed, filled in and checked."""

    layers: list[tuple[Source, dict[str, Any]]] = field(default_factory=list)
    looked_for: list[str] = field(default_factory=list)

    @property
    def sources(self) -> list[Source]:
        return [s for s, _ in self.layers]

    def document(self) -> dict[str, Any]:
        """The defaults merged into one document (``output.root`` kept)."""
        out: dict[str, Any] = {}
        for _, data in self.layers:
            out = merge(out, data)
        return out


def user_file(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "synth" / "config.yaml"


def find(cwd: str | Path | None = None, env: Mapping[str, str] | None = None) -> tuple[list[Source], list[str]]:
    """The defaults files that exist (lowest precedence first) and every path looked at."""
    env = os.environ if env is None else env
    named = (env.get("SYNTH_CONFIG") or "").strip()
    if named.lower() == OFF:
        return [], []
    found: list[Source] = []
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"SYNTH_CONFIG: {named!r} is not a file; point it at a defaults file, or set SYNTH_CONFIG=none "
                "for no defaults"
            )
        user = Source("SYNTH_CONFIG", str(path))
    else:
        path = user_file(env)
        user = Source("user", str(path))
    looked = [str(path)]
    if path.is_file():
        found.append(user)
    project = Path(cwd or os.getcwd()) / PROJECT_FILE
    looked.append(str(project))
    if project.is_file() and (not found or not project.samefile(found[0].path)):
        found.append(Source("project", str(project)))
    return found, looked


def load_defaults(cwd: str | Path | None = None, env: Mapping[str, str] | None = None) -> Defaults:
    """Find, read and check the defaults files (see the module's doc). Raises ConfigError naming
    the file and the problem, one line per problem."""
    env = dict(os.environ) if env is None else dict(env)
    sources, looked = find(cwd, env)
    return Defaults([(s, read_defaults(s.path, env)) for s in sources], looked)


def read_defaults(path: str | Path, env: Mapping[str, str]) -> dict[str, Any]:
    """One defaults file, ``${VAR}`` filled in and every field checked as a job's would be."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text (byte {e.start}); save the defaults file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read the defaults file ({e.strerror or e}); check the path") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{where}: not valid YAML{at}; fix the defaults file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: a defaults file is a mapping of job fields (providers, routes, output, cache, ...), "
            f"not a {type(data).__name__}"
        )
    if "name" in data:
        raise ConfigError(f"{where}: name: a job's name is its own; remove it from the defaults file")
    try:
        data = substitute(data, dict(env))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    problems = _check(data)
    if problems:
        raise ConfigError("\n".join(f"{where}: {p}" for p in problems))
    return data


def _check(data: dict[str, Any]) -> list[str]:
    """Field problems of a defaults document (types, ranges, unknown fields). Checks across fields
    (a route naming a provider) wait for the merged job: the providers may come from another file."""
    output = data.get("output")
    problems: list[str] = []
    if isinstance(output, dict) and "root" in output:
        root = output["root"]
        if not isinstance(root, str) or not root.strip():
            problems.append("output.root: must be a folder path or URI, e.g. s3://bucket/synth")
        elif unknown_protocol(root):
            problems.append(f"output.root: {unknown_protocol(root)}")
        output = {k: v for k, v in output.items() if k != "root"}
        data = {**data, "output": output}
    try:
        JobSpec.model_validate(merge(_STUB, data))
    except ValidationError as e:
        for err in e.errors():
            if not err["loc"]:
                continue  # a check across fields: made on the merged job
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field; check the spelling (synth spec schema lists every field)"
            line = f"{format_loc(tuple(err['loc']))}: {msg}"
            if line not in problems:
                problems.append(line)
    return problems


# ---------------------------------------------------------------- merging


def merge(low: Any, high: Any) -> Any:
    """``high`` over ``low``: mappings key by key at any depth, anything else replaced whole."""
    if not (isinstance(low, dict) and isinstance(high, dict)):
        return high
    out = dict(low)
    for key, value in high.items():
        out[key] = merge(low[key], value) if key in low else value
    return out


def merge_layer(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    """A job document (or a higher defaults file) over a lower one, with the rules for providers
    and routes: routes merge one route at a time; naming providers drops the routes below."""
    if high.get("providers"):
        low = {k: v for k, v in low.items() if k != "routes"}
    elif "providers" in high:  # providers: [] or null names none: the lower file's stand
        high = {k: v for k, v in high.items() if k != "providers"}
    out = merge({k: v for k, v in low.items() if k != "routes"}, {k: v for k, v in high.items() if k != "routes"})
    if isinstance(low.get("routes"), dict) and isinstance(high.get("routes"), dict):
        out["routes"] = {**low["routes"], **high["routes"]}
    elif "routes" in high or "routes" in low:
        out["routes"] = high["routes"] if "routes" in high else low["routes"]
    return out


def apply_defaults(job: Any, defaults: Defaults) -> Any:
    """The job document with the defaults merged under it and the output root applied. A document
    that is not a mapping is returned as is (the job's own check names the problem)."""
    if not isinstance(job, dict) or not defaults.layers:
        return job
    base = defaults.document()
    output = base.get("output")
    root = None
    if isinstance(output, dict) and "root" in output:
        root = output["root"]
        base["output"] = {k: v for k, v in output.items() if k != "root"}
    merged = merge_layer(base, job)
    if root:
        out = merged.get("output")
        out = dict(out) if isinstance(out, dict) else {}
        out["uri"] = under_root(root, out.get("uri"))
        merged["output"] = out
    return merged


def is_relative(uri: str) -> bool:
    return not ("://" in uri or "::" in uri or uri.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", uri))


def under_root(root: str, uri: Any) -> Any:
    """Where an output goes given ``output.root``: a relative ``uri`` under it, none at
    ``<root>/${job}``, an absolute path or URI where it says."""
    if uri is None:
        uri = "${job}"
    if not isinstance(uri, str) or not is_relative(uri):
        return uri
    rel = posixpath.normpath(uri.replace("\\", "/"))
    if rel == "..":
        rel = "../"
    if rel.startswith("../"):
        raise ConfigError(
            f"output.uri: {uri!r} climbs out of output.root ({root}) with '..'; give a path inside it or an "
            "absolute path or URI"
        )
    return root.rstrip("/") if rel == "." else f"{root.rstrip('/')}/{rel}"


# ---------------------------------------------------------------- showing

# keys written as their value, never as a variable's name; names that hold secrets
_SECRET_FIELD = re.compile(r"(?i)(api[_-]?key|secret|token|passw|credential|authori[sz]ation|cookie)")
_SECRET_VAR = re.compile(r"(?i)(key|secret|token|passw|credential|auth)")
_KEYLIKE = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-*]{6,}|AIza[0-9A-Za-z_\-]{10,}|gh[pousr]_[A-Za-z0-9]{16,}|xox[abprs]-[A-Za-z0-9-]{8,}"
    r"|AKIA[0-9A-Z]{12,}|hf_[A-Za-z0-9]{16,})|(?i:bearer\s+\S+)"
)
# a long token mixing cases and digits, with no path or URL punctuation: looks like a key
_OPAQUE = re.compile(r"^(?=.*[a-z])(?=.*[A-Z])(?=.*\d)[A-Za-z0-9_\-+=]{24,}$")
HIDDEN = "***"
_PLAIN = ("name", "kind", "model")  # never a key, and may well be long mixed-case words


def _named_vars(value: Any) -> set[str]:
    """Every environment variable a document names for a secret (``keys[].env``, ``*_env``)."""
    names: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str) and (k == "env" or str(k).endswith("_env")):
                names.add(v)
            names |= _named_vars(v)
    elif isinstance(value, list):
        for v in value:
            names |= _named_vars(v)
    return names


def redact(doc: Any, env: Mapping[str, str] | None = None) -> Any:
    """The document with every secret-looking value replaced by ``***``: the values of the
    variables it names for keys (and of any variable whose name says secret), a field named like a
    secret, and anything shaped like a key. Variable names are kept: they are how keys are given."""
    env = os.environ if env is None else env
    names = _named_vars(doc) | {n for n in env if _SECRET_VAR.search(n)}
    secrets = sorted({env[n] for n in names if len(env.get(n) or "") >= 8}, key=len, reverse=True)

    def clean(text: str, opaque: bool) -> str:
        for s in secrets:
            text = text.replace(s, HIDDEN)
        text = _KEYLIKE.sub(HIDDEN, text)
        return HIDDEN if opaque and _OPAQUE.match(text) else text

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if isinstance(value, str):
            if key != "env" and not key.endswith("_env") and _SECRET_FIELD.search(key):
                return HIDDEN
            return clean(value, opaque=key not in _PLAIN)
        return value

    return walk(doc)


def _in_order(doc: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The merged document in the job file's order of fields, its output where the job writes."""
    order = list(JobSpec.model_fields)
    out = {k: doc[k] for k in sorted(doc, key=lambda k: order.index(k) if k in order else len(order))}
    if isinstance(out.get("output"), dict) and "uri" in out["output"]:
        out["output"] = {**out["output"], "uri": spec.output.uri}
    return out


def show(job: str | Path | None = None, *, full: bool = False, cwd: str | Path | None = None) -> tuple[str, list[str]]:
    """YAML of the merged job (or, with no job, of the merged defaults), secrets redacted, headed by
    the files that contributed; and the merged job's problems, one line each (empty when valid)."""
    from synth.spec import load_env_file, parse_job, read_document

    if job is not None:
        load_env_file(Path(job).parent / ".env")
    env = dict(os.environ)
    defaults = load_defaults(cwd, env)
    sources = list(reversed(defaults.sources))
    problems: list[str] = []
    if job is None:
        doc: Any = defaults.document()
    else:
        sources.insert(0, Source("job", str(job)))
        doc = substitute(apply_defaults(read_document(job), defaults), env)
        try:
            spec = parse_job(doc, env, check_keys=False)
            doc = spec.model_dump(mode="json") if full else _in_order(doc, spec)
        except ConfigError as e:
            problems = [redact(line, env) for line in str(e).splitlines()]
    head = ["# synth config: merged from (highest precedence first)"]
    head += [f"#   {s.role}: {s.path}" for s in sources] or ["#   no defaults files"]
    if not defaults.sources:
        off = (env.get("SYNTH_CONFIG") or "").strip().lower() == OFF
        head.append(
            "#   (SYNTH_CONFIG=none: defaults off)" if off else f"#   looked for: {', '.join(defaults.looked_for)}"
        )
    body = yaml.safe_dump(redact(doc, env), sort_keys=False, allow_unicode=True) if doc else "{}\n"
    return "\n".join(head) + "\n" + body.rstrip("\n"), problems


__all__ = ["Defaults", "Source", "apply_defaults", "find", "load_defaults", "merge", "redact", "show"]
