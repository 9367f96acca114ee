"""The manifest under ``<output>/_manifest/``: the job's identity, a commit entry per shard, and
intents (files a piece of a shard is about to publish), so resume skips committed work and removes
what an interrupted piece left behind.

Layout of a dataset::

    <uri>/data/<partition>=<value>/.../shard-00000042.parquet   records (hive-partitioned)
    <uri>/dead_letters/shard-00000042.parquet                    units that did not become records
    <uri>/_manifest/job.json                                     fingerprint and output-shaping spec
    <uri>/_manifest/intents/shard-00000042.json                  files a shard is publishing
    <uri>/_manifest/commits/shard-00000042.json                  the shard is complete
    <uri>/stats.json                                             counts, tokens, cost, timing, spec

A shard is made in pieces, one commit generation each: generation 0 is the first; a later run adds
one when a larger ``count`` extends the shard or ``--retry-failed`` makes its dead letters again.
Files and entries of generation g > 0 carry a ``.gNNNN`` suffix (``shard-00000042.g0001.parquet``).
Each entry lists all of the shard's files as they are after that piece, with its counts, so the
latest entry of a shard is the shard; writing it is the atomic step, after which superseded
dead-letter files and entries are removed (or, after a kill, by the next run's cleanup).

Readers of ``<uri>/data`` see whole files only. Files of a piece that was interrupted while
publishing are removed before it runs again; ``committed_files`` lists exactly the committed ones.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from synth.engine.lease import LEASE
from synth.engine.plan import Shard, fingerprint, pieces, shaping_spec, spec_differences
from synth.engine.storage import Storage
from synth.errors import StorageError
from synth.records import ENVELOPE_FIELDS, unit_index
from synth.spec import JobSpec

MANIFEST = "_manifest"
COMMITS = f"{MANIFEST}/commits"
INTENTS = f"{MANIFEST}/intents"
DEAD = "dead_letters/"
READERS = 16  # commit entries read side by side from an object store
_ENTRY = re.compile(r"^shard-(\d{8})(?:\.g(\d{4,}))?\.json$")
_FIXED = ("shard", "gen", "start", "stop", "files", "units", "bytes", "dead_bytes")


def shard_name(k: int) -> str:
    return f"shard-{k:08d}"


def piece_name(k: int, gen: int = 0) -> str:
    """File stem of shard ``k``'s piece of generation ``gen`` (generation 0 keeps the plain name)."""
    return shard_name(k) if gen == 0 else f"{shard_name(k)}.g{gen:04d}"


def parse_entry_name(name: str) -> tuple[int, int] | None:
    """(shard, generation) of a commit or intent file name; None for anything else."""
    m = _ENTRY.match(name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, indent=1, default=str).encode()


def _add(a: Any, b: Any) -> Any:
    """Counts add up (per key for dicts); anything else takes the newer value."""
    if a is None:
        return b
    if b is None:
        return a
    if (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return a + b
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _add(a.get(k), b.get(k)) for k in {**a, **b}}
    return b


def _empty(a: Any) -> Any:
    return {} if isinstance(a, dict) else 0 if isinstance(a, (int, float)) else None


def merge_entry(base: dict[str, Any] | None, piece: dict[str, Any], made: dict[str, Any]) -> dict[str, Any]:
    """A shard's commit entry after ``piece`` (see :meth:`Shard.piece`). ``made``: the piece's files,
    ``bytes``, ``dead_bytes`` and stats. Counts add up, except that a retry replaces the dead-letter
    fields (``dead_*``) and files, and that ``units`` grows only by the units the piece added, so
    totals over the latest entries count every unit once."""
    if base is None:
        entry = dict(made)
        if piece.get("stop") is not None:
            entry.update(start=piece["start"], stop=piece["stop"])
        return entry
    retry = bool(piece.get("retry"))
    entry: dict[str, Any] = {}  # type: ignore[no-redef]
    for key in {**base, **made}:
        if key in _FIXED:
            continue
        a, b = base.get(key), made.get(key)
        entry[key] = (b if b is not None else _empty(a)) if retry and key.startswith("dead_") else _add(a, b)
    stop = max(base["stop"], int(piece["stop"]))
    kept = [f for f in base.get("files", []) if not (retry and f.startswith(DEAD))]
    entry.update(
        start=base["start"],
        stop=stop,
        units=base.get("units", 0) + stop - base["stop"],
        files=kept + list(made.get("files", [])),
        bytes=base.get("bytes", 0) - (base.get("dead_bytes", 0) if retry else 0) + made.get("bytes", 0),
        dead_bytes=(0 if retry else base.get("dead_bytes", 0)) + made.get("dead_bytes", 0),
    )
    return entry


def _clear(st: Storage) -> None:
    """What --overwrite removes: everything but the lease of the run that is replacing the folder."""
    for name in st.list(""):
        if name != MANIFEST:
            st.remove(name)
    for name in st.list(MANIFEST):
        if f"{MANIFEST}/{name}" != LEASE:
            st.remove(f"{MANIFEST}/{name}")


class Manifest:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._shard_size: int | None = None

    # ------------------------------------------------------------- job identity
    def open(self, job: JobSpec, *, overwrite: bool = False) -> set[int]:
        """Claim the output folder for this job; return the shards already committed.

        A folder holding a different job (any output-shaping difference) is refused, naming the
        differences, unless ``overwrite`` is set, which deletes it first. A larger ``count`` than
        the folder's extends it (``job.json`` keeps the largest); a smaller one is refused."""
        st = self.storage
        existing = st.read_bytes(f"{MANIFEST}/job.json")
        if existing is not None and overwrite:
            _clear(st)
            existing = None
        new_spec = shaping_spec(job)
        envelope = [n for n, _ in ENVELOPE_FIELDS]
        new = {"fingerprint": fingerprint(job), "spec": new_spec, "envelope": envelope}
        self._shard_size = job.output.shard_size
        if existing is not None:
            old = json.loads(existing)
            old_spec = old.get("spec", {})
            if {**old_spec, "count": None} != {**new_spec, "count": None}:
                diff = spec_differences(old_spec, new_spec)
                raise StorageError(
                    f"{st.uri} holds a different job ({'; '.join(diff[:5])}); "
                    "use a new output path or --overwrite to replace it"
                )
            if old.get("envelope") != envelope:
                old = self._same_envelope(old, envelope)
            had = int(old_spec.get("count", 0))
            if job.count < had:
                raise StorageError(
                    f"{st.uri} holds this job with count {had:,}; count {job.count:,} is smaller "
                    f"(count: {had} -> {job.count}); run with count {had} or more to resume or extend it, "
                    "or use a new output path or --overwrite"
                )
            if job.count > had:  # extend: the ids of the first units do not depend on the count
                st.write_bytes(
                    f"{MANIFEST}/job.json",
                    _dumps({**old, "spec": new["spec"], "extended_at": datetime.now(timezone.utc).isoformat()}),
                )
            return self.committed()
        if overwrite is False and st.list("data"):
            raise StorageError(
                f"{st.uri} already holds data that synth did not write; use a new output path or --overwrite"
            )
        st.write_bytes(
            f"{MANIFEST}/job.json",
            _dumps({**new, "created_at": datetime.now(timezone.utc).isoformat()}),
        )
        return set()

    def _same_envelope(self, old: dict[str, Any], envelope: list[str]) -> dict[str, Any]:
        """An output whose committed records have other envelope columns (written by an earlier
        synth: before ``route``, job.json named none) is refused rather than given files of two
        schemas; one with nothing committed takes this run's columns."""
        if self.committed():
            had = old.get("envelope") or [c for c in envelope if c != "route"]
            gone, added = sorted(set(had) - set(envelope)), sorted(set(envelope) - set(had))
            what = "; ".join([f"without {', '.join(added)}"] * bool(added) + [f"with {', '.join(gone)}"] * bool(gone))
            raise StorageError(
                f"{self.storage.uri} holds records of other envelope columns ({what}) made by another synth "
                "version; finish it with that version, or use a new output path or --overwrite"
            )
        old = {**old, "envelope": envelope}
        self.storage.write_bytes(f"{MANIFEST}/job.json", _dumps(old))
        return old

    def _size(self) -> int:
        if self._shard_size is None:
            raw = self.storage.read_bytes(f"{MANIFEST}/job.json")
            self._shard_size = int(json.loads(raw)["spec"]["shard_size"]) if raw else 1000
        return self._shard_size

    # ------------------------------------------------------------- shards
    def generations(self) -> dict[int, list[int]]:
        """Committed shard -> the generations of its commit entries, oldest first."""
        out: dict[int, list[int]] = {}
        for n in self.storage.list(COMMITS):
            p = parse_entry_name(n)
            if p:
                out.setdefault(p[0], []).append(p[1])
        return {k: sorted(v) for k, v in out.items()}

    def committed(self) -> set[int]:
        return set(self.generations())

    def entry(self, shard: int, gen: int = 0) -> dict[str, Any] | None:
        """The commit entry of one piece, with ``gen``, ``start`` and ``stop`` filled in (entries
        written before pieces existed cover ``units`` units from the shard's first)."""
        raw = self.storage.read_bytes(f"{COMMITS}/{piece_name(shard, gen)}.json")
        if not raw:
            return None
        e = json.loads(raw)
        e["shard"], e["gen"] = shard, gen
        if "stop" not in e:
            e["start"] = e.get("start", shard * self._size())
            e["stop"] = e["start"] + int(e.get("units", 0))
        return e

    def head(self, shard: int, gens: Sequence[int] | None = None) -> dict[str, Any] | None:
        """The latest commit entry of a shard (``gens``: its generations, when already listed)."""
        for g in sorted(self.generations().get(shard, []) if gens is None else gens, reverse=True):
            e = self.entry(shard, g)
            if e is not None:
                return e
        return None

    def heads(self) -> dict[int, dict[str, Any]]:
        """Committed shard -> its latest commit entry, which describes the whole shard."""
        listed = sorted(self.generations().items())
        if self.storage.local or len(listed) < 8:
            found = [self.head(k, gens) for k, gens in listed]
        else:  # an object store answers one small GET at a time slowly: ask for many at once
            with ThreadPoolExecutor(READERS) as pool:
                found = list(pool.map(lambda kg: self.head(*kg), listed))
        return {k: e for (k, _), e in zip(listed, found) if e is not None}

    def commit_entries(self) -> list[dict[str, Any]]:
        """One entry per committed shard (its latest): sums over them count every unit once."""
        return list(self.heads().values())

    def dead_units(self, entry: dict[str, Any]) -> list[int]:
        """Unit indices of the dead letters a commit entry lists."""
        import pyarrow.parquet as pq

        out: list[int] = []
        for rel in entry.get("files", []):
            if not rel.startswith(DEAD):
                continue
            raw = self.storage.read_bytes(rel)
            if raw is None:
                raise StorageError(
                    f"{self.storage.uri}: {rel} is committed but missing; "
                    "restore it, or use a new output path or --overwrite"
                )
            ids = pq.read_table(io.BytesIO(raw), columns=["request_id"]).column(0).to_pylist()
            out += [unit_index(i) for i in ids]
        return out

    def todo(self, job: JobSpec, *, retry_failed: bool = False, pending: Sequence[Shard] | None = None) -> list[Shard]:
        """The pieces left to make: shards not committed, units a larger count added to committed
        shards, and with ``retry_failed`` the dead letters of committed shards. ``pending``: the
        pieces of a round that failed; only its retries not yet committed are planned again (a
        retry committed in that round is not retried once more)."""
        heads = self.heads()
        if pending is not None:
            again = {s.index for s in pending if s.only is not None and heads.get(s.index, {}).get("gen", -1) < s.part}
        else:
            again = set(heads) if retry_failed else set()
        retry = {k: self.dead_units(heads[k]) for k in sorted(again) if k in heads and heads[k].get("dead_letters")}
        covered = {k: (int(h["gen"]), int(h["stop"])) for k, h in heads.items()}
        return list(pieces(job.count, job.output.shard_size, covered, retry))

    def intend(self, shard: int, files: list[str], *, gen: int = 0, remove: Sequence[str] = ()) -> None:
        """Before a piece publishes: its new ``files``, and the files its commit supersedes."""
        self.storage.write_bytes(
            f"{INTENTS}/{piece_name(shard, gen)}.json",
            _dumps({"shard": shard, "gen": gen, "files": files, "remove": list(remove)}),
        )

    def commit(self, shard: int, entry: dict[str, Any], *, gen: int = 0, remove: Sequence[str] = ()) -> None:
        """Write the piece's entry (the atomic step), then drop what it superseded and its intent."""
        self.storage.write_bytes(
            f"{COMMITS}/{piece_name(shard, gen)}.json", _dumps({**entry, "shard": shard, "gen": gen})
        )
        for rel in remove:
            self.storage.remove(rel)
        for g in range(gen):
            self.storage.remove(f"{COMMITS}/{piece_name(shard, g)}.json")
        self.storage.remove(f"{INTENTS}/{piece_name(shard, gen)}.json")

    def clean_interrupted(self, committed: set[int] | None = None) -> int:
        """Finish or undo what interrupted pieces left; return how many pieces were undone.

        A piece whose entry was written gets its superseded files removed; one whose entry was not
        loses the files it published (the shard stays as its latest entry says). Superseded entries
        go too. ``committed`` is not needed any more (each intent names its generation)."""
        st = self.storage
        gens = self.generations()
        cleaned = 0
        for n in st.list(INTENTS):
            p = parse_entry_name(n)
            if p is None:
                continue
            k, g = p
            raw = st.read_bytes(f"{INTENTS}/{n}")
            info = json.loads(raw) if raw else {}
            done = bool(gens.get(k)) and max(gens[k]) >= g
            # never remove what the shard's latest entry lists, whatever an intent says
            head = self.head(k, gens.get(k, []))
            keep = set(head.get("files", [])) if head else set()
            for rel in info.get("remove", []) if done else info.get("files", []):
                if rel not in keep:
                    st.remove(rel)
            cleaned += 0 if done else 1
            st.remove(f"{INTENTS}/{n}")
        for k, gs in gens.items():
            for g in gs[:-1]:
                st.remove(f"{COMMITS}/{piece_name(k, g)}.json")
        return cleaned

    def committed_files(self) -> list[str]:
        """URLs of every committed data file, for readers that want the manifest's exact view."""
        files: list[str] = []
        for e in self.commit_entries():
            files += [self.storage.url(f) for f in e.get("files", []) if f.startswith("data/")]
        return sorted(files)

    def write_stats(self, stats: dict[str, Any]) -> None:
        self.storage.write_bytes("stats.json", _dumps(stats))
