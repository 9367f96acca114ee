from synth.engine.plan import fingerprint, shaping_spec, shard_count, shards, spec_differences, unit_id
from synth.spec import parse_job


def job(**kw):
    base = {"name": "t", "count": 2500, "seed": 7, "generator": {"kind": "structured", "prompt": "p"}}
    base.update(kw)
    return parse_job(base)


def test_ids_are_deterministic_and_unique():
    a, b = job(), job()
    assert fingerprint(a) == fingerprint(b)
    ids = [u.id for s in shards(a.count, 1000) for u in s.units(fingerprint(a), a.seed)]
    assert len(ids) == 2500 == len(set(ids))
    again = [u.id for s in shards(b.count, 1000) for u in s.units(fingerprint(b), b.seed)]
    assert ids == again


def test_ids_change_with_output_shaping_fields_only():
    base = fingerprint(job())
    assert fingerprint(job(seed=8)) != base
    assert fingerprint(job(generator={"kind": "structured", "prompt": "q"})) != base
    # count, limits and engine settings do not change the ids of the first units
    assert fingerprint(job(count=10)) == base
    assert fingerprint(job(engine={"batch_size": 7})) == base
    assert unit_id(base, 3) == unit_id(fingerprint(job(count=5)), 3)


def test_shards_cover_every_unit_once_and_skip_committed():
    got = list(shards(2500, 1000))
    assert [(s.start, s.stop) for s in got] == [(0, 1000), (1000, 2000), (2000, 2500)]
    assert shard_count(2500, 1000) == 3
    assert [s.index for s in shards(2500, 1000, skip={0, 2})] == [1]


def test_differences_are_named():
    d = spec_differences(shaping_spec(job()), shaping_spec(job(count=10, seed=1)))
    assert "count: 2500 -> 10" in d and "seed: 7 -> 1" in d
