"""Where an export lands: a file or a folder at any fsspec URI, written under a temporary name
beside it and moved into place only once complete, so a failed or interrupted export leaves nothing
half-written under the name asked for."""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from fsspec.utils import infer_compression

from synth.engine.storage import Storage
from synth.errors import ConfigError, StorageError
from synth.spec import OutputSpec, StorageSpec


class Target:
    """The destination ``uri`` (a local path or any fsspec URI); refuses one that exists unless
    ``overwrite``. Credentials and endpoint as a job's ``output.storage`` (or the AWS variables)."""

    def __init__(self, uri: str, *, overwrite: bool = False, storage: StorageSpec | dict[str, Any] | None = None):
        spec = StorageSpec.model_validate(storage or {})
        try:
            self._st = Storage(OutputSpec(uri=uri, storage=spec))
        except ValueError as e:  # pydantic's refusal of an unknown protocol
            raise ConfigError(f"--to: {str(e).splitlines()[-1].strip()}") from None
        self.uri = uri
        self.fs = self._st.fs
        self.path = self._st.root
        self.local = self._st.local
        self.overwrite = overwrite
        if self.exists() and not overwrite:
            raise ConfigError(f"{uri} exists; use --overwrite to replace it, or another --to")

    def exists(self) -> bool:
        try:
            return bool(self.fs.exists(self.path))
        except Exception as e:  # noqa: BLE001 - botocore/aiohttp errors vary; one line naming the cause
            raise StorageError(f"cannot reach {self.uri}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None

    def _tmp(self) -> str:
        parent, name = posixpath.split(self.path)
        return posixpath.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:12]}")

    def _rm(self, path: str) -> None:
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def _publish(self, tmp: str) -> None:
        if self.exists():
            self._rm(self.path)
        if self.local:
            os.replace(tmp, self.path)
        else:  # an object store has no rename: a server-side copy, then the temporary is deleted
            self.fs.mv(tmp, self.path, recursive=True)

    @contextmanager
    def file(self) -> Iterator[IO[bytes]]:
        """A binary file to write; compressed when the name says so (``.gz``, ``.zst``, ``.bz2``)."""
        if self.local:
            os.makedirs(posixpath.dirname(self.path) or ".", exist_ok=True)
        tmp = self._tmp()
        try:
            with self.fs.open(tmp, "wb", compression=infer_compression(self.path)) as f:
                yield f
            self._publish(tmp)
        except BaseException:
            self._rm(tmp)  # an object-store upload is completed by close() even after an error
            raise

    @contextmanager
    def folder(self) -> Iterator[str]:
        """A local folder to fill; moved (or uploaded) to the target once the block succeeds."""
        if self.local:
            os.makedirs(posixpath.dirname(self.path) or ".", exist_ok=True)
            tmp = self._tmp()
            try:
                os.makedirs(tmp)
                yield tmp
                self._publish(tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return
        work = tempfile.mkdtemp(prefix="synth-export-")
        remote = self._tmp()
        try:
            yield work
            self.fs.put(work.rstrip("/") + "/", remote, recursive=True)
            self._publish(remote)
        except BaseException:
            self._rm(remote)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
