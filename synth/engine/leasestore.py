"""Compare-and-swap on one small object of an output folder, on any fsspec store: what the output
lease (:mod:`synth.engine.lease`) is built on.

- a local folder: created by hard-linking a complete temporary file (which fails when one exists,
  like ``O_CREAT | O_EXCL``); replaced and deleted after comparing, under an exclusive ``flock`` of
  the object's folder;
- S3: created with a conditional put (``If-None-Match: *``), replaced and deleted with ``If-Match``
  on the ETag that was read;
- other fsspec stores: exclusive create where the store offers it; a replace or delete reads again
  just before it writes, which leaves a window of one round trip (accepted there).

``read()`` returns the content and a version token; ``create``, ``replace`` and ``delete`` return
False when the condition did not hold (and raise on anything else).
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from synth.engine.storage import Storage


class Store(Protocol):
    def read(self) -> tuple[bytes | None, Any]: ...  # content and a version token
    def create(self, data: bytes) -> bool: ...  # False when the object exists
    def replace(self, data: bytes, token: Any) -> bool: ...  # False when it changed since token
    def delete(self, token: Any) -> bool: ...


class _LocalStore:
    def __init__(self, path: str) -> None:
        self.path, self.dir = path, os.path.dirname(path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(self.dir, exist_ok=True)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # and with it the lock

    def read(self) -> tuple[bytes | None, Any]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None, None
        return data, data  # the content itself is the version, compared under the lock

    def _tmp(self, data: bytes) -> str:
        tmp = os.path.join(self.dir, f".tmp-lease-{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            f.write(data)
        return tmp

    def create(self, data: bytes) -> bool:
        with self._locked():
            tmp = self._tmp(data)
            try:
                os.link(tmp, self.path)  # readers see the whole lease or none
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)

    def replace(self, data: bytes, token: Any) -> bool:
        with self._locked():
            if self.read()[0] != token or token is None:
                return False
            os.replace(self._tmp(data), self.path)
            return True

    def delete(self, token: Any) -> bool:
        with self._locked():
            if self.read()[0] != token or token is None:
                return False
            os.unlink(self.path)
            return True


def _precondition_failed(e: BaseException) -> bool:
    if isinstance(e, (FileExistsError, FileNotFoundError)):
        return True
    resp = getattr(e.__cause__, "response", None) or getattr(e, "response", None) or {}
    return str(resp.get("Error", {}).get("Code", "")) in (
        "PreconditionFailed",
        "ConditionalRequestConflict",
        "412",
        "409",
    )


class _S3Store:
    def __init__(self, fs: Any, path: str) -> None:
        self.fs, self.path = fs, path
        self.bucket, self.key, _ = fs.split_path(path)

    def read(self) -> tuple[bytes | None, Any]:
        from fsspec.asyn import sync

        async def get() -> tuple[bytes | None, Any]:
            try:
                resp = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            except FileNotFoundError:
                return None, None
            try:
                return await resp["Body"].read(), resp["ETag"]  # content and ETag of one response
            finally:
                resp["Body"].close()

        return sync(self.fs.loop, get)

    def _call(self, method: str, **kw: Any) -> bool:
        try:
            self.fs.call_s3(method, Bucket=self.bucket, Key=self.key, **kw)
            return True
        except OSError as e:
            if _precondition_failed(e):
                return False
            raise
        finally:
            self.fs.invalidate_cache(self.path)

    def create(self, data: bytes) -> bool:
        return self._call("put_object", Body=data, IfNoneMatch="*")

    def replace(self, data: bytes, token: Any) -> bool:
        return token is not None and self._call("put_object", Body=data, IfMatch=token)

    def delete(self, token: Any) -> bool:
        return token is not None and self._call("delete_object", IfMatch=token)


class _FsStore:
    """Any other fsspec store: exclusive create where offered, read-compare-write otherwise."""

    def __init__(self, fs: Any, path: str) -> None:
        self.fs, self.path = fs, path

    def read(self) -> tuple[bytes | None, Any]:
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None, None
        return data, data

    def create(self, data: bytes) -> bool:
        self.fs.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            with self.fs.open(self.path, "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError, TypeError):  # no exclusive mode on this store
            if self.fs.exists(self.path):
                return False
            self.fs.pipe_file(self.path, data)
            return True

    def replace(self, data: bytes, token: Any) -> bool:
        if token is None or self.read()[0] != token:
            return False
        self.fs.pipe_file(self.path, data)
        return True

    def delete(self, token: Any) -> bool:
        if token is None or self.read()[0] != token:
            return False
        self.fs.rm_file(self.path)
        return True


def store_for(storage: Storage, rel: str) -> Store:
    """The compare-and-swap store of one object of an output folder."""
    path = storage.path(rel)
    if storage.local:
        return _LocalStore(path)
    proto = storage.fs.protocol
    if {"s3", "s3a"} & set((proto,) if isinstance(proto, str) else proto):
        return _S3Store(storage.fs, path)
    return _FsStore(storage.fs, path)
