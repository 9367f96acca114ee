"""Ray job entrypoints: `ray job submit ... -- python -m jobs.build JOB.yaml`."""
