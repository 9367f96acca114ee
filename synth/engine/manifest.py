"""The manifest under ``<output>/_manifest/``: the job's identity, one commit entry per shard, and
intents (files a shard is about to publish), so resume skips committed shards and removes what an
interrupted shard left behind.

Layout of a dataset::

    <uri>/data/<partition>=<value>/.../shard-00000042.parquet   records (hive-partitioned)
    <uri>/dead_letters/shard-00000042.parquet                    units that did not become records
    <uri>/_manifest/job.json                                     fingerprint and output-shaping spec
    <uri>/_manifest/intents/shard-00000042.json                  files a shard is publishing
    <uri>/_manifest/commits/shard-00000042.json                  the shard is complete
    <uri>/stats.json                                             counts, tokens, cost, timing, spec

Readers of ``<uri>/data`` see whole files only. Files of a shard that was interrupted while
publishing are removed before it runs again; ``committed_files`` lists exactly the committed ones.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from synth.engine.plan import fingerprint, shaping_spec, spec_differences
from synth.engine.storage import Storage
from synth.errors import StorageError
from synth.spec import JobSpec

MANIFEST = "_manifest"


def shard_name(k: int) -> str:
    return f"shard-{k:08d}"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, indent=1, default=str).encode()


class Manifest:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    # ------------------------------------------------------------- job identity
    def open(self, job: JobSpec, *, overwrite: bool = False) -> set[int]:
        """Claim the output folder for this job; return the shards already committed.

        A folder holding a different job (any output-shaping difference) is refused, naming the
        differences, unless ``overwrite`` is set, which deletes it first."""
        st = self.storage
        existing = st.read_bytes(f"{MANIFEST}/job.json")
        if existing is not None and overwrite:
            st.remove_all()
            existing = None
        new = {"fingerprint": fingerprint(job), "spec": shaping_spec(job)}
        if existing is not None:
            old = json.loads(existing)
            if old.get("spec") != new["spec"]:
                diff = spec_differences(old.get("spec", {}), new["spec"])
                raise StorageError(
                    f"{st.uri} holds a different job ({'; '.join(diff[:5])}); "
                    "use a new output path or --overwrite to replace it"
                )
            return self.committed()
        if overwrite is False and st.list("data"):
            raise StorageError(f"{st.uri} already holds data that synth did not write; use a new output path or --overwrite")
        st.write_bytes(
            f"{MANIFEST}/job.json",
            _dumps({**new, "created_at": datetime.now(timezone.utc).isoformat()}),
        )
        return set()

    # ------------------------------------------------------------- shards
    def committed(self) -> set[int]:
        return {int(n[6:14]) for n in self.storage.list(f"{MANIFEST}/commits") if n.startswith("shard-") and n.endswith(".json")}

    def commit_entries(self) -> list[dict[str, Any]]:
        out = []
        for n in self.storage.list(f"{MANIFEST}/commits"):
            raw = self.storage.read_bytes(f"{MANIFEST}/commits/{n}")
            if raw:
                out.append(json.loads(raw))
        return out

    def intend(self, shard: int, files: list[str]) -> None:
        self.storage.write_bytes(f"{MANIFEST}/intents/{shard_name(shard)}.json", _dumps({"shard": shard, "files": files}))

    def commit(self, shard: int, entry: dict[str, Any]) -> None:
        self.storage.write_bytes(f"{MANIFEST}/commits/{shard_name(shard)}.json", _dumps({"shard": shard, **entry}))
        self.storage.remove(f"{MANIFEST}/intents/{shard_name(shard)}.json")

    def clean_interrupted(self, committed: set[int]) -> int:
        """Remove files that interrupted shards published; return how many shards were cleaned."""
        cleaned = 0
        for n in self.storage.list(f"{MANIFEST}/intents"):
            if not (n.startswith("shard-") and n.endswith(".json")):
                continue
            k = int(n[6:14])
            raw = self.storage.read_bytes(f"{MANIFEST}/intents/{n}")
            if k not in committed and raw:
                for rel in json.loads(raw)["files"]:
                    self.storage.remove(rel)
                cleaned += 1
            self.storage.remove(f"{MANIFEST}/intents/{n}")
        return cleaned

    def committed_files(self) -> list[str]:
        """URLs of every committed data file, for readers that want the manifest's exact view."""
        files: list[str] = []
        for e in self.commit_entries():
            files += [self.storage.url(f) for f in e.get("files", []) if f.startswith("data/")]
        return sorted(files)

    def write_stats(self, stats: dict[str, Any]) -> None:
        self.storage.write_bytes("stats.json", _dumps(stats))
