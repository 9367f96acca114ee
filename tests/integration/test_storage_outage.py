"""Object-store outages: the S3 server behind a proxy that goes down and comes back on the same port
(its data kept). Short outages are ridden out; one longer than output.max_outage_s stops the run
with one line naming the object, and the next run resumes to exactly N."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import pytest
import s3fs

from synth.engine.storage import Storage
from synth.errors import StorageError
from synth.spec import OutputSpec
from tests.support.runs import (
    env,
    error_lines,
    finish,
    http_provider,
    job_doc,
    start_synth,
    stop,
    synth_run,
    wait_for,
    write_job,
)
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.s3]


@pytest.fixture
def proxied(s3_bucket):
    """(proxy in front of the S3 server, bucket, the server's own endpoint)."""
    endpoint, bucket = s3_bucket
    u = urlsplit(endpoint)
    proxy = TcpProxy(u.hostname or "127.0.0.1", u.port or 80).up()
    yield proxy, bucket, endpoint
    proxy.down()


def storage(proxy: TcpProxy, uri: str, max_outage_s: float) -> tuple[Storage, list[float]]:
    st = Storage(OutputSpec(uri=uri, storage={"endpoint_url": proxy.url}, max_outage_s=max_outage_s))
    waits: list[float] = []
    real_sleep = st.sleep

    def sleep(s: float) -> None:
        waits.append(s)
        real_sleep(s)

    st.sleep = sleep
    return st, waits


def test_a_write_during_an_outage_lands_when_the_store_is_back(proxied):
    proxy, bucket, endpoint = proxied
    st, waits = storage(proxy, f"s3://{bucket}/ds", max_outage_s=60)
    st.write_bytes("first.json", b"1")
    proxy.down()
    # the outage itself: longer than the S3 client's own retries (about 3.5 s) ride out
    back = threading.Timer(6.0, proxy.up)
    back.start()
    try:
        st.write_bytes("during/outage.json", b"written across an outage")
    finally:
        back.join()
    assert waits, "the write never failed: the outage did not happen under it"
    direct = s3fs.S3FileSystem(endpoint_url=endpoint)
    assert direct.cat_file(f"{bucket}/ds/during/outage.json") == b"written across an outage"
    assert st.read_bytes("first.json") == b"1"


def test_a_store_that_stops_answering_for_a_while_is_waited_for(proxied):
    proxy, bucket, endpoint = proxied
    st, waits = storage(proxy, f"s3://{bucket}/ds", max_outage_s=60)
    st.write_bytes("before.json", b"0")
    proxy.pause()  # as a server stopped with SIGSTOP: connections taken, nothing answered
    back = threading.Timer(8.0, proxy.resume)
    back.start()
    try:
        st.write_bytes("paused/while.json", b"written across a pause")
        assert st.read_bytes("before.json") == b"0"
    finally:
        back.join()
    direct = s3fs.S3FileSystem(endpoint_url=endpoint)
    assert direct.cat_file(f"{bucket}/ds/paused/while.json") == b"written across a pause"


def test_an_outage_longer_than_the_policy_is_one_line_naming_the_object(proxied):
    proxy, bucket, endpoint = proxied
    st, waits = storage(proxy, f"s3://{bucket}/ds", max_outage_s=12)  # the S3 client alone tries for ~5 s
    proxy.down()
    with pytest.raises(StorageError) as e:
        st.write_bytes("data/part-1.parquet", b"x")
    msg = str(e.value)
    assert "\n" not in msg
    assert f"cannot write s3://{bucket}/ds/data/part-1.parquet" in msg and "max_outage_s" in msg
    assert waits and sum(waits) <= 12 + 1e-6, waits  # tried again, backing off within the policy
    proxy.up()
    assert st.read_bytes("data/part-1.parquet") is None  # nothing half-written is visible


def test_missing_objects_are_answers_not_outages(proxied):
    proxy, bucket, _ = proxied
    st, waits = storage(proxy, f"s3://{bucket}/ds", max_outage_s=60)
    assert st.read_bytes("never/written.json") is None
    assert st.list("never") == []
    assert waits == []


def _committed(endpoint: str, bucket: str) -> int:
    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    try:
        return len(fs.ls(f"{bucket}/ds/_manifest/commits", refresh=True))
    except FileNotFoundError:
        return 0


def _job(tmp_path, simulator, bucket, proxy, n, **output):
    doc = job_doc(
        "outage",
        f"s3://{bucket}/ds",
        n,
        shard=50,
        providers=[http_provider(simulator.url, limits={"rpm": 3600})],
    )
    doc["output"].update({"storage": {"endpoint_url": proxy.url}, **output})
    return write_job(tmp_path / "outage.yaml", doc)


def _ids(endpoint: str, bucket: str) -> list[str]:
    """Ids of the committed records (what synth.open reads: files a commit entry names)."""
    import synth

    ds = synth.open(f"s3://{bucket}/ds", storage={"endpoint_url": endpoint})
    return ds.to_table(columns=["id"])["id"].to_pylist()


@pytest.mark.ray
@pytest.mark.timeout(900)  # three runs against S3, one on Ray; minutes on a loaded machine
def test_a_run_rides_out_a_short_outage_and_a_long_one_stops_it_resumably(tmp_path, simulator, proxied, ray_address):
    proxy, bucket, endpoint = proxied
    n = 600
    # 1. a 4 s outage mid-run (10 s at the job's rate), under the default policy: the run, on the
    # single-process executor (the writes are the same code on Ray), completes with exactly N
    job = _job(tmp_path, simulator, bucket, proxy, n)
    p = start_synth(job, "--no-cache", environ=env())
    try:
        wait_for(lambda: _committed(endpoint, bucket) >= 1, 300, "the first commit", p)
        proxy.down()
        back = threading.Timer(4.0, proxy.up)
        back.start()
        code, err = finish(p, timeout=300)
        back.join()
    finally:
        stop(p)
    assert code == 0, err[-3000:]
    ids = _ids(endpoint, bucket)
    assert len(ids) == n and len(set(ids)) == n

    # 2. the same job extended, on Ray, with the store gone for longer than output.max_outage_s:
    # exit 3, one error line naming the storage problem, no traceback; then it resumes (locally) to
    # exactly the new N
    first = _committed(endpoint, bucket)
    job = _job(tmp_path, simulator, bucket, proxy, 2 * n, max_outage_s=3)
    p = start_synth(job, "--no-cache", address=ray_address, environ=env())
    try:
        wait_for(lambda: _committed(endpoint, bucket) > first, 300, "a commit of the extension", p)
        proxy.down()
        code, err = finish(p, timeout=300)
    finally:
        stop(p)
        proxy.up()
    assert code == 3, err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1 and "max_outage_s" in lines[0] and f"s3://{bucket}/ds" in lines[0], err[-3000:]
    assert "Traceback" not in err and len(err.splitlines()) < 15, err[-3000:]
    done = synth_run(job, "--no-cache")
    assert done.returncode == 0, done.stderr[-3000:]
    ids = _ids(endpoint, bucket)
    assert len(ids) == 2 * n and len(set(ids)) == 2 * n
