"""The only package that imports Ray: driver, gateway actors, workers, datasink, manifest."""

import os

# Ray's services bind to 127.0.0.1 and report nothing home unless the user says otherwise.
for _k, _v in {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "AWS_EC2_METADATA_DISABLED": "true",
    "RAY_DATA_DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY": "8",
}.items():
    os.environ.setdefault(_k, _v)
