"""synth: distributed synthetic-data generation on Ray.

import synth
result = synth.run("jobs/examples/structured.yaml", count=1000, output="./out/demo")
"""

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

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "JobSpec",
    "ProviderError",
    "StorageError",
    "SynthError",
    "__version__",
    "load_job",
    "run",
]
