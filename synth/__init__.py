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
    import pyarrow.dataset


def open(uri: str, storage: dict[str, _typing.Any] | None = None) -> "pyarrow.dataset.Dataset":  # noqa: A001
    """The committed records of a job's output (a local folder or any fsspec URI, finished or
    still running) as a ``pyarrow.dataset.Dataset``. ``storage``: object-storage settings as in a
    job file's ``output.storage`` (``endpoint_url``, ``region``, ``key_env``, ``secret_env``)."""
    from synth.dataset import open as open_output  # pyarrow.dataset loads on first use only

    return open_output(uri, storage)


__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "JobSpec",
    "ProviderError",
    "StorageError",
    "SynthError",
    "__version__",
    "load_job",
    "open",
    "run",
]
