"""Object storage through fsspec: the filesystem for an output URI, atomic writes, a preflight.

An object store that stops answering (a restart, a network blip, throttling) is waited for: every
operation is tried again with backoff until it has failed for ``output.max_outage_s`` in a row, then
it raises a one-line StorageError naming the object. Missing objects and refused permissions are
answers, not outages, and are never retried. Local folders are never retried.

Credentials are named by environment variable in the job file (or come from the standard AWS
variables); they are read where the filesystem is built and never stored in the spec or logs.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import fsspec
from fsspec.core import url_to_fs

from synth.errors import ConfigError, StorageError, SynthError
from synth.spec import OutputSpec, unknown_protocol

log = logging.getLogger("synth.engine")
T = TypeVar("T")
# answers of the store, not signs of an outage: retrying them cannot help
_ANSWERS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError, SynthError)


def storage_options(out: OutputSpec, env: dict[str, str] | None = None) -> dict[str, Any]:
    env = dict(os.environ) if env is None else env
    proto = out.uri.split("://", 1)[0] if "://" in out.uri else "file"
    if proto not in ("s3", "s3a"):
        return {}
    st = out.storage
    opts: dict[str, Any] = {"config_kwargs": {"connect_timeout": 5, "retries": {"max_attempts": 3}}}
    endpoint = st.endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint_url"] = endpoint
    if st.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"):
        opts["client_kwargs"] = {"region_name": st.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")}
    if st.anonymous:
        opts["anon"] = True
    for field, var in (("key", st.key_env), ("secret", st.secret_env)):
        if var:
            if not env.get(var):
                raise StorageError(
                    f"output.storage: environment variable {var} is not set; set it or remove {field}_env"
                )
            opts[field] = env[var]
    return opts


class Storage:
    """The dataset folder: paths relative to the output URI, whole-file writes."""

    def __init__(self, out: OutputSpec, env: dict[str, str] | None = None) -> None:
        self.uri = out.uri.rstrip("/")
        self._out = out
        self._env = env
        self.fs, self.root = self._make_fs()
        self.local = "file" in _protocols(self.fs)
        self.max_outage_s = out.max_outage_s
        self.sleep: Callable[[float], None] = time.sleep
        self.clock: Callable[[], float] = time.monotonic

    def _retrying(self, what: str, rel: str, op: Callable[[], T]) -> T:
        """``op()``, tried again with backoff while the store is unreachable, for up to
        ``max_outage_s`` from its first failure; then a one-line StorageError naming the object."""
        if self.local:
            return op()
        first: float | None = None
        delay = 0.5
        while True:
            tried = self.clock()
            try:
                return op()
            except _ANSWERS:
                raise
            except Exception as e:  # noqa: BLE001 - botocore/aiohttp/OS errors vary: an outage until proven otherwise
                now = self.clock()
                first = tried if first is None else first  # the outage began before the client gave up
                if now - first >= self.max_outage_s:
                    raise StorageError(
                        f"cannot {what} {self.url(rel)}: {type(e).__name__}: {_first_line(e)} (failing for "
                        f"{now - first:.0f}s, output.max_outage_s is {self.max_outage_s:g}); check the object "
                        "store and run the job again to resume"
                    ) from None
                if delay == 0.5:
                    log.warning("object store: cannot %s %s (%s); trying again", what, rel, type(e).__name__)
                self.sleep(min(delay, max(0.0, first + self.max_outage_s - now)))
                delay = min(delay * 2, 10.0)
                self.fs.invalidate_cache()

    def _make_fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        uri = self.uri if "://" in self.uri else os.path.abspath(self.uri)
        unknown = unknown_protocol(self.uri)
        if unknown:
            raise ConfigError(f"output.uri: {unknown}")
        try:
            fs, root = url_to_fs(uri, **storage_options(self._out, self._env))
        except ImportError as e:  # a known protocol whose package is not installed
            raise ConfigError(
                f"output.uri: {self.uri!r} needs a package that is not installed ({_first_line(e)}); "
                "install it or use another output.uri"
            ) from None
        except ValueError as e:  # fsspec's refusal of a malformed URI
            raise ConfigError(f"output.uri: {self.uri!r} cannot be opened ({_first_line(e)}); fix output.uri") from None
        return fs, root.rstrip("/")

    def __getstate__(self) -> dict[str, Any]:
        # rebuilt on the other side from variable names: no credentials travel with the object
        return {"out": self._out}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["out"])  # type: ignore[misc]

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def url(self, *parts: str) -> str:
        p = self.path(*parts)
        return p if self.local else f"{_protocols(self.fs)[0]}://{p}"

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole file; readers see all of it or nothing."""
        target = self.path(rel)
        if self.local:
            parent = posixpath.dirname(target)
            self.fs.makedirs(parent, exist_ok=True)
            tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}")
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        else:  # one PUT (or a multipart upload) is invisible until complete; sent again whole

            def put() -> None:
                with self.fs.open(target, "wb") as f:
                    f.write(data)

            self._retrying("write", rel, put)

    def read_bytes(self, rel: str) -> bytes | None:
        def get() -> bytes:
            with self.fs.open(self.path(rel), "rb") as f:
                return f.read()

        try:
            return self._retrying("read", rel, get)
        except FileNotFoundError:
            return None

    def list(self, rel: str) -> list[str]:
        """Names of files directly under a folder (empty when it does not exist)."""
        try:
            entries = self._retrying("list", rel, lambda: self.fs.ls(self.path(rel), detail=False, refresh=True))
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def remove(self, rel: str) -> None:
        try:
            self._retrying("remove", rel, lambda: self.fs.rm(self.path(rel), recursive=True))
        except FileNotFoundError:
            pass

    def remove_all(self) -> None:
        def rm() -> None:
            if self.fs.exists(self.root):
                self.fs.rm(self.root, recursive=True)

        try:
            self._retrying("remove", "", rm)
        except FileNotFoundError:
            pass

    def _local_preflight(self) -> None:
        """A local output must be (or become) a folder this process can create files in. A bad
        path is a bad job file (exit 2), named in one line without the OS error's class."""
        fix = "choose a writable folder with output.uri or -o"
        parent = self.root
        while not os.path.lexists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise ConfigError(f"output.uri: {self.uri!r} cannot be a folder: {parent} is a file, not a folder; {fix}")
        if not os.access(parent, os.W_OK | os.X_OK) or _read_only(parent):
            raise ConfigError(f"output.uri: cannot write to {self.uri!r}: {parent} is read-only; {fix}")

    def preflight(self) -> None:
        """Fail fast, in one line, when the destination cannot be written. Writes nothing."""
        try:
            if self.local:
                self._local_preflight()
                return
            bucket = self.root.split("/", 1)[0]
            self.fs.ls(bucket, detail=False, refresh=True)
        except (StorageError, ConfigError):
            raise
        except FileNotFoundError:
            raise StorageError(
                f"bucket {self.root.split('/', 1)[0]!r} of {self.uri} does not exist; create it or fix output.uri"
            ) from None
        except PermissionError as e:
            raise StorageError(
                f"cannot access {self.uri}: permission denied ({type(e).__name__}); check the credentials"
            ) from None
        except Exception as e:  # noqa: BLE001 - botocore/aiohttp errors vary; name the cause in one line
            endpoint = self._out.storage.endpoint_url or "the default endpoint"
            raise StorageError(
                f"cannot reach {self.uri} at {endpoint}: {type(e).__name__}: {_first_line(e)}; "
                "check output.storage.endpoint_url and that the server is running"
            ) from None


def _read_only(folder: str) -> bool:
    """A folder no file can be created in even by root: a read-only mount, or a kernel
    filesystem such as /proc or /sys (access() answers yes there for root)."""
    if hasattr(os, "statvfs"):
        try:
            if os.statvfs(folder).f_flag & os.ST_RDONLY:
                return True
        except OSError:
            return True
    real = os.path.realpath(folder)
    return any(real == m or real.startswith(m + "/") for m in _KERNEL_MOUNTS)


_KERNEL_MOUNTS = ("/proc", "/sys")


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""
