"""Entrypoint for a Ray job: ``python -m jobs.build JOB [--output URI] [--count N] [--overwrite]``.

Inside a Ray job, RAY_ADDRESS points at the cluster, so the run joins it instead of starting Ray."""

from __future__ import annotations

import sys

from synth.cli import main

if __name__ == "__main__":
    main(["run", *sys.argv[1:], "--quiet"])
