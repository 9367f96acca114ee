"""synth: distributed synthetic-data generation on Ray.

import synth
result = synth.run("jobs/examples/structured.yaml", count=1000, output="./out/demo")
records = synth.open("./out/demo")      # a pyarrow.dataset.Dataset of the committed records
"""

import typing as _typing

__version__ = "0.1.0"

from synth.api import load_job, run  # noqa: E402
from synth.errors import (  # noqa: E402
    BudgetExceeded,
    ConfigError,
    ProviderError,
    StorageError,
    SynthError,
)
from synth.spec import JobSpec  # noqa: E402

if _typing.TYPE_CHECKING:
    import pyarrow
    import pyarrow.dataset


def open(uri: str, storage: dict[str, _typing.Any] | None = None) -> "pyarrow.dataset.Dataset":  # noqa: A001
    """The committed records of a job's output (a local folder or any fsspec URI, finished or
    still running) as a ``pyarrow.dataset.Dataset``. ``storage``: object-storage settings as in a
    job file's ``output.storage`` (``endpoint_url``, ``region``, ``key_env``, ``secret_env``)."""
    from synth.dataset import open as open_output  # pyarrow.dataset loads on first use only

    return open_output(uri, storage)


def generate(kind: str, **options: _typing.Any) -> "pyarrow.Table":
    """Make records of ``kind`` without a job file and return them as a ``pyarrow.Table``
    (``.to_pylist()`` for a list of dicts): ``synth.generate("structured", count=100,
    schema={"city": {"type": "string"}})``. Options as ``synth generate``: count, schema, prompt,
    model, fallback, route, budget, format, output, name, seed; see :func:`synth.quick.generate`."""
    from synth.quick import generate as quick_generate

    return quick_generate(kind, **options)


def stream(job: _typing.Any, **options: _typing.Any) -> "_typing.Iterator[pyarrow.Table]":
    """Run (or resume) a job and yield its records as ``pyarrow.Table`` s as shards commit, each
    record once; leaving the loop early stops the run. See :func:`synth.streaming.stream`."""
    from synth.streaming import stream as follow

    return follow(job, **options)


__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "JobSpec",
    "ProviderError",
    "StorageError",
    "SynthError",
    "__version__",
    "generate",
    "load_job",
    "open",
    "run",
    "stream",
]
