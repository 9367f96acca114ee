"""``synth init``: a commented starter job that runs as is on the offline ``sim`` provider.

The templates ship in ``synth/starters/`` (package data), so an installed synth writes them
anywhere. They need no file of the repository: what they read is inline, except the RAG starter's
documents, which are written into a folder beside the job file."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from synth.errors import ConfigError

KINDS = ("structured", "conversation", "timeseries", "events", "rag")
_DOCS_MARK = "__DOCS__"
_PROVIDERS_MARK = "#@providers"


def _starters() -> Any:  # a Traversable: the templates may sit in a zip
    return resources.files("synth") / "starters"


def template(kind: str) -> str:
    """The starter job of ``kind`` with the shared providers block in place (paths unfilled)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    text = (_starters() / f"{kind}.yaml").read_text(encoding="utf-8")
    return text.replace(_PROVIDERS_MARK, (_starters() / "_providers.yaml").read_text(encoding="utf-8").rstrip())


def _docs_ref(folder: Path) -> str:
    """How the job names its documents folder: relative to the working folder when inside it (the
    job then moves with its folder), else absolute (relative paths may not climb out with '..')."""
    try:
        return folder.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return folder.resolve().as_posix()


def _stage(path: Path, text: str) -> Path:
    """``text`` in a temporary file beside ``path``, to be renamed over it once all is written."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a job file is an ordinary file
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _copy_docs(target: Path, force: bool) -> None:
    """The RAG starter's documents, published whole: copied to a temporary folder, then renamed."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        for item in (_starters() / "rag-docs").iterdir():
            if item.is_file():
                (tmp / item.name).write_bytes(item.read_bytes())
        if force and target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def init(kind: str, path: str | Path | None = None, *, force: bool = False) -> tuple[Path, list[Path]]:
    """Write the starter job of ``kind`` to ``path`` (default ``<kind>.yaml``): (the job file,
    other files written). Refuses to replace an existing file unless ``force``; writes nothing
    then."""
    text = template(kind)
    job = Path(path) if path is not None else Path(f"{kind}.yaml")
    if job.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"{str(job)!r}: a starter job is YAML with comments; give a path ending in .yaml")
    if job.is_dir():
        raise ConfigError(f"{str(job)!r} is a folder; give the path of the job file to write, e.g. {job / 'job.yaml'}")
    docs = job.with_name(f"{job.stem}-docs") if kind == "rag" else None
    existing = [p for p in (job, docs) if p is not None and p.exists()]
    if existing and not force:
        names = " and ".join(repr(str(p)) for p in existing)
        raise ConfigError(
            f"{names} already exist{'s' if len(existing) == 1 else ''}; pass --force to replace, or give another path"
        )
    if not job.parent.is_dir():
        raise ConfigError(f"folder {str(job.parent)!r} does not exist; create it first or give another path")
    if docs is not None:
        text = text.replace(_DOCS_MARK, json.dumps(_docs_ref(docs)))
    try:
        staged = _stage(job, text.replace("THIS_FILE", _shell_path(job)))
    except OSError as e:
        raise ConfigError(f"cannot write {str(job)!r} ({e.strerror or e}); give a writable path") from None
    try:
        if docs is not None:
            _copy_docs(docs, force)
        os.replace(staged, job)
    finally:
        staged.unlink(missing_ok=True)
    return job, [docs] if docs is not None else []


def _shell_path(p: Path) -> str:
    return shlex.quote(str(p))


def next_steps(job: Path, written: list[Path]) -> str:
    """What ``synth init`` prints: the files written and the command to run next."""
    extra = "".join(f" (and {p}{os.sep if p.is_dir() else ''})" for p in written)
    return (
        f"wrote {job}{extra}: it runs as is on the offline sim provider\n"
        f"next: synth run {_shell_path(job)}\n"
        f"then edit it (its comments say how to use a real model) and check it: synth spec check {_shell_path(job)}"
    )
