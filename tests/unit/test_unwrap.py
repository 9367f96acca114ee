"""An error raised in a Ray worker reaches the user as it was raised, without the remote traceback."""

from __future__ import annotations

import ray.exceptions

from synth.engine.execute import _unwrap
from synth.errors import BudgetExceeded, StorageError


def _as_ray_raises(err: Exception) -> BaseException:
    try:
        raise err
    except Exception as e:  # noqa: BLE001 - wrapped as Ray wraps a task's exception
        return ray.exceptions.RayTaskError(
            "ray::Write()", "Traceback (most recent call last):\n  ...", e
        ).as_instanceof_cause()


def test_a_storage_error_from_a_write_task_is_ours_again():
    wrapped = _as_ray_raises(StorageError("cannot write s3://b/ds/data/x.parquet: EndpointConnectionError"))
    assert isinstance(wrapped, StorageError) and "pid=" in str(wrapped)  # what Ray hands the driver
    got = _unwrap(wrapped)
    assert type(got) is StorageError and str(got).startswith("cannot write s3://b/ds/data/x.parquet")


def test_an_error_that_is_not_ours_is_left_as_it_is():
    wrapped = _as_ray_raises(ValueError("bad"))
    assert _unwrap(wrapped) is wrapped
    plain = BudgetExceeded("budget spent")
    assert _unwrap(plain) is plain
