"""The fault matrix, end to end: each scenario is one or more ``python -m synth run JOB -o OUT``
subprocesses (each with its own embedded Ray) against the project's simulator
(``python -m synth.simulator serve``, started here), S3 through moto's server behind a TCP proxy.

For each scenario: units planned / recorded (unique ids read back through ``synth.open``) /
dead-lettered and why (stats.json), the exit code and whether it tells the truth, wall time,
answers paid (the simulator's count of 200s) and paid twice (paid minus the answers the units
needed: one per unit that got an answer plus re-asks), 429s sent, processes of the run still alive
10 s after it exited, and key values found in the output folder, Ray's session folder (RAY_TMPDIR)
and the command's output.

    python benchmarks/reliability.py              # the whole matrix: 23 runs, about 14 minutes on 2 cores
    python benchmarks/reliability.py --quick      # N=300, 3 kills: 17 runs, about 12 minutes
    python benchmarks/reliability.py --only sigkill --only storm_429

Writes benchmarks/out/reliability.json; a full run (no --quick, no --only) also writes
benchmarks/results/reliability.md (a "## Notes" section already there is kept).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

from common import OUT, header, table, write_job  # noqa: E402
from faults import (  # noqa: E402
    HEADERS,
    RAY_RESTARTS,
    SECRETS,
    Run,
    cells,
    finish,
    free_port,
    markdown,
    problems,
    read_output,
    row,
    scan_s3,
    versions,
    wait_until,
)

from tests.support.runs import GENERATOR  # noqa: E402 - the suite's structured record
from tests.support.simulator import SimulatorProcess  # noqa: E402
from tests.support.tcpproxy import TcpProxy  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "reliability.md"
WORK = OUT / "reliability"
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
# key values made for this invocation: long and unique, so a scan that finds one found a leak
KEYS = {"REL_KEY_A": f"sk-rel-{secrets.token_hex(16)}", "REL_KEY_B": f"sk-rel-{secrets.token_hex(16)}"}
SECRETS[:] = KEYS.values()
RUN_TIMEOUT_S = 900.0


class Ctx:
    def __init__(self, quick: bool, seed: int) -> None:
        self.quick = quick
        self.n = 300 if quick else 600
        self.kills = 3 if quick else 10
        self.rng = random.Random(seed)
        self.sim: SimulatorProcess | None = None

    def shared_sim(self) -> SimulatorProcess:
        """One simulator for the scenarios that need no restart, back to its start state each time."""
        if self.sim is None:
            self.sim = SimulatorProcess(latency_ms=20, seed=7).start()
        self.sim.restore()
        return self.sim


def job(
    name: str,
    url: str,
    count: int,
    *,
    shard: int = 50,
    rpm: float = 60000,
    keys: int = 1,
    title: str = "",
    **extra: Any,
) -> Path:
    """A structured job of ``count`` units into WORK/name/out against the simulator at ``url``."""
    alias = ["alpha", "bravo"]
    doc: dict[str, Any] = {
        "name": title or f"rel-{name}",
        "count": count,
        "seed": 5,
        "generator": GENERATOR,
        "providers": [
            {
                "name": "default",
                "model": "compat:gpt-4o-mini",
                "base_url": f"{url}/v1",
                "keys": [{"env": env, "alias": alias[i], "rpm": rpm} for i, env in enumerate(list(KEYS)[:keys])],
            }
        ],
        "output": {"uri": str(WORK / name / "out"), "shard_size": shard},
    }
    for section, values in extra.items():
        doc.setdefault(section, {}).update(values)
    return write_job(doc, WORK / name / "job.yaml")


def fresh(name: str) -> tuple[Path, Path]:
    """The scenario's folder emptied, and a short RAY_TMPDIR of its own (Ray's socket paths must
    stay under 107 bytes) whose session logs are scanned for keys too."""
    shutil.rmtree(WORK / name, ignore_errors=True)
    (WORK / name).mkdir(parents=True)
    return WORK / name / "out", Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))


def one_run(
    name: str,
    ctx: Ctx,
    *,
    sim_config: dict[str, Any] | None = None,
    sim_keys: dict[str, dict[str, Any]] | None = None,
    expected: tuple[int, ...] = (0,),
    count: int | None = None,
    during: Callable[[Run, SimulatorProcess, Path], dict[str, Any] | None] | None = None,
    resume: int | None = None,
    **job_options: Any,
) -> dict[str, Any]:
    """One ``synth run`` against the shared simulator configured with ``sim_config`` and ``sim_keys``;
    with ``resume`` (the exit expected of it) the fault is then lifted and the job run again."""
    out, tmp = fresh(name)
    sim = ctx.shared_sim()
    if sim_config:
        sim.configure(**sim_config)
    if sim_keys:
        sim.set_keys(sim_keys)
    n = count or ctx.n
    run = Run(job(name, sim.url, n, **job_options), str(out), env=env_of(tmp))
    extra = during(run, sim, out) if during else None
    run = finish(run, RUN_TIMEOUT_S)
    runs = [run]
    if resume is not None:
        first = run.proc.returncode
        error = next((x for x in run.stderr.splitlines() if x.startswith("error:")), "")
        extra = {**(extra or {}), "first_exit_truthful": first == resume and bool(error), "first_error_line": error}
        paid = sim.stats()["ok"]
        sim.set_keys({k: None for k in KEYS.values()})  # the fault lifted, the counters kept
        sim.configure(**{k: 0.0 for k in sim_config or {} if k.endswith("_rate")})
        runs.append(finish(run.again(), RUN_TIMEOUT_S))
        extra["paid_before_resume"] = paid
    st = sim.stats()
    sim.restore()
    return row(name, runs, n, st, tmp, out, expected=expected, extra=extra)


def env_of(ray_tmp: Path, **more: str) -> dict[str, str]:
    return {**KEYS, "RAY_TMPDIR": str(ray_tmp), **more}


def committed(out: Path) -> int:
    return len(list((out / "_manifest" / "commits").glob("*.json")))


# ---------------------------------------------------------------- the scenarios


def clean(ctx: Ctx) -> dict[str, Any]:
    return one_run("clean", ctx)


def errors_5xx(ctx: Ctx) -> dict[str, Any]:
    return one_run("errors_5xx", ctx, sim_config={"error_rate": 0.1})


def malformed(ctx: Ctx) -> dict[str, Any]:
    # 3 tries a unit (2 re-asks): 0.2^3 = 0.8 % of units are expected as dead letters, near the 1 % limit
    return one_run("malformed", ctx, sim_config={"malformed_rate": 0.2}, expected=(0, 6))


def hangs(ctx: Ctx) -> dict[str, Any]:
    return one_run("hangs", ctx, sim_config={"hang_rate": 0.02, "hang_s": 30})


def storm_429(ctx: Ctx) -> dict[str, Any]:
    """The key's true limit is 60 RPM; the job claims 6,000. The rate is measured from 2 s after the
    first answer to the last answer, from the simulator's counters."""
    samples: list[tuple[float, int]] = []

    def during(run: Run, sim: SimulatorProcess, out: Path) -> dict[str, Any]:
        while run.poll() is None:
            samples.append((time.monotonic(), sim.stats()["ok"]))
            time.sleep(0.25)
        oks = [(t, ok) for t, ok in samples if ok > 0]
        if len(oks) < 2:
            return {}
        first, total = oks[0][0], oks[-1][1]
        (t0, n0), *_, (t1, n1) = [(t, ok) for t, ok in oks if t >= first + 2.0 and ok < total] or oks
        rate = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
        return {"rate_per_s": round(rate, 3), "true_rps": 1.0, "rate_of_true": round(rate / 1.0, 3)}

    count = 30 if ctx.quick else 60
    true_limit = {KEYS["REL_KEY_A"]: {"rpm": 60}}
    return one_run("storm_429", ctx, count=count, shard=10, rpm=6000, during=during, sim_keys=true_limit)


def revoke_after_first_commit(env_name: str) -> Callable[[Run, SimulatorProcess, Path], dict[str, Any]]:
    def during(run: Run, sim: SimulatorProcess, out: Path) -> dict[str, Any]:
        if wait_until(lambda: committed(out) >= 1, RUN_TIMEOUT_S, "the first commit", run, step=0.05):
            sim.set_keys({KEYS[env_name]: {"revoked": True}})  # POST /_sim/keys
            return {"revoked_at_commits": committed(out)}
        return {"revoked_at_commits": None}

    return during


def revoked(ctx: Ctx) -> dict[str, Any]:
    # two keys, 1,800 RPM each (60 answers/s together): the run is still going after its first commit
    return one_run("revoked", ctx, keys=2, rpm=1800, during=revoke_after_first_commit("REL_KEY_B"))


def revoked_only_key(ctx: Ctx) -> dict[str, Any]:
    during = revoke_after_first_commit("REL_KEY_A")
    return one_run("revoked_only_key", ctx, rpm=3600, during=during, resume=5)


def all_fail(ctx: Ctx) -> dict[str, Any]:
    # engine.max_outage_s 15: with the default 300 the run would wait out 5 minutes of "outage" first
    cfg = {"error_rate": 1.0}
    return one_run("all_fail", ctx, sim_config=cfg, expected=(6, 7), count=100, engine={"max_outage_s": 15})


def provider_down(ctx: Ctx) -> dict[str, Any]:
    """The simulator process stopped after 100 answers, a new one started on the same port 30 s later."""
    name, down_s = "provider_down", 30.0
    out, tmp = fresh(name)
    sim = SimulatorProcess(port=free_port(), latency_ms=20, seed=7).start()
    try:
        run = Run(job(name, sim.url, ctx.n, rpm=3600), str(out), env=env_of(tmp))
        went_down = wait_until(lambda: sim.stats()["ok"] >= 100, RUN_TIMEOUT_S, "100 answers", run)
        before = sim.stats()  # answers in flight when it stops are cut, not given
        sim.stop()  # connections refused from now on
        if went_down:
            time.sleep(down_s)
        sim.start()
        run = finish(run, RUN_TIMEOUT_S)
        st = {k: before[k] + v for k, v in sim.stats().items() if k in ("ok", "rate_limited")}
    finally:
        sim.stop()
    return row(name, [run], ctx.n, st, tmp, out, extra={"went_down_mid_run": went_down})


def sigkill(ctx: Ctx) -> dict[str, Any]:
    """K runs SIGKILLed at a random moment 0 to 2.5 s after they start buying, then one to the end."""
    name, n = "sigkill", ctx.n if ctx.quick else 2 * ctx.n
    out, tmp = fresh(name)
    sim = ctx.shared_sim()
    job_file = job(name, sim.url, n, shard=100, rpm=6000)  # 100 answers/s
    runs: list[Run] = []
    moments = []
    for _ in range(ctx.kills):
        before = sim.stats()["ok"]
        runs.append(run := Run(job_file, str(out), env=env_of(tmp)))
        if wait_until(lambda b=before: sim.stats()["ok"] > b, RUN_TIMEOUT_S, "answers", run, step=0.05):
            moment = ctx.rng.uniform(0.0, 2.5)
            time.sleep(moment)
            if run.poll() is None:
                run.kill()
                moments.append(round(moment, 2))
        run.wait(60)
    runs.append(finish(Run(job_file, str(out), env=env_of(tmp)), RUN_TIMEOUT_S))
    extra = {"kills": len(moments), "kill_moments_s": moments}
    return row(name, runs, n, sim.stats(), tmp, out, extra=extra)


def s3_outage(ctx: Ctx) -> list[dict[str, Any]]:
    """S3 (moto) behind a proxy: down 4 s after the first commit (ridden out), then the job extended
    to 2N and the store down for good after a commit of the extension with output.max_outage_s 5
    (exit 3); the store back, the job run again to the end."""
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise
    os.environ.update(S3_ENV)  # this process reads the output back through s3fs too
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    proxy = TcpProxy("127.0.0.1", port).up()
    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    bucket = f"rel-{secrets.token_hex(4)}"
    fs.mkdir(bucket)
    uri, rows = f"s3://{bucket}/ds", []
    sim = ctx.shared_sim()

    def commits() -> int:
        try:
            return len(fs.ls(f"{bucket}/ds/_manifest/commits", refresh=True))
        except FileNotFoundError:
            return 0

    def s3_job(name: str, count: int, **output: Any) -> Path:
        storage = {"uri": uri, "storage": {"endpoint_url": proxy.url}, **output}
        return job(name, sim.url, count, rpm=3600, output=storage, title="rel-s3")  # one job, extended

    def seen() -> dict[str, Any]:
        return {"held": read_output(uri, {"endpoint_url": endpoint}, fs), "scan": scan_s3(fs, f"{bucket}/ds", SECRETS)}

    try:
        # 1. a short outage under the default policy (output.max_outage_s 120)
        _, tmp = fresh("s3_short")
        run = Run(s3_job("s3_short", ctx.n), uri, env=env_of(tmp, **S3_ENV))
        hit = wait_until(lambda: commits() >= 1, RUN_TIMEOUT_S, "the first S3 commit", run, step=0.2)
        if hit:
            proxy.down()
            threading.Timer(4.0, proxy.up).start()
        run = finish(run, RUN_TIMEOUT_S)
        proxy.up()
        rows.append(row("s3_short", [run], ctx.n, sim.stats(), tmp, None, **seen(), extra={"outage_mid_run": hit}))
        # 2. extended to 2N, the store gone past output.max_outage_s 5, then back and resumed
        sim.restore()
        _, tmp = fresh("s3_long")
        first = commits()
        job_file = s3_job("s3_long", 2 * ctx.n, max_outage_s=5)
        stopped = Run(job_file, uri, env=env_of(tmp, **S3_ENV))
        hit = wait_until(lambda: commits() > first, RUN_TIMEOUT_S, "a commit of the extension", stopped, step=0.2)
        if hit:
            proxy.down()
        stopped = finish(stopped, RUN_TIMEOUT_S)
        proxy.up()
        resumed = finish(Run(job_file, uri, env=env_of(tmp, **S3_ENV)), RUN_TIMEOUT_S)
        err = next((x for x in stopped.stderr.splitlines() if x.startswith("error:")), "")
        extra = {
            "outage_mid_run": hit,
            "stopped_exit_truthful": stopped.proc.returncode == 3,
            "stopped_error_line": err,
        }
        # the first N were bought in part 1, before the simulator's counters were reset
        runs, seen_now = [stopped, resumed], seen()
        rows.append(
            row("s3_long", runs, 2 * ctx.n, sim.stats(), tmp, None, **seen_now, extra=extra, bought_before=ctx.n)
        )
    finally:
        proxy.down()
        server.stop()
    return rows


SCENARIOS: dict[str, Callable[[Ctx], Any]] = {
    f.__name__: f
    for f in (clean, errors_5xx, malformed, hangs, storm_429, revoked, revoked_only_key, provider_down, all_fail)
}
SCENARIOS |= {"sigkill": sigkill, "s3_outage": s3_outage}
WHAT = {
    "clean": "no faults (baseline)",
    "errors_5xx": "10 % of calls answered 500/503",
    "malformed": "20 % of structured answers invalid",
    "hangs": "2 % of calls hang 30 s",
    "storm_429": "the key truly 60 RPM, the job claims 6,000",
    "revoked": "1 of 2 keys revoked after the first commit",
    "revoked_only_key": "the only key revoked after the first commit (exit 5), then back and resumed",
    "provider_down": "simulator stopped 30 s after 100 answers, back on its port",
    "all_fail": "every call 500/503 (engine.max_outage_s 15)",
    "sigkill": "SIGKILL at random moments, then a run to the end",
    "s3_short": "S3 down 4 s after the first commit",
    "s3_long": "job extended to 2N, S3 down past output.max_outage_s 5 (exit 3), back, resumed",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller N and 3 kills: a few minutes")
    ap.add_argument("--only", action="append", choices=list(SCENARIOS), help="run this scenario (repeatable)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the kill moments")
    args = ap.parse_args()
    from common import command_line

    header("reliability: the fault matrix")
    import psutil

    head: dict[str, Any] = {
        "command": command_line(),
        "cpus": psutil.cpu_count(),
        "load_before": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        "versions": versions(),
        "started": time.strftime("%H:%M", time.gmtime()),
    }
    print("# versions: " + ", ".join(f"{k} {v}" for k, v in head["versions"].items()), flush=True)
    ctx = Ctx(args.quick, args.seed)
    rows: list[dict[str, Any]] = []
    t0, names = time.monotonic(), args.only or list(SCENARIOS)
    try:
        for i, name in enumerate(names):
            print(f"- {name}", flush=True)
            try:
                got = SCENARIOS[name](ctx)
            except Exception as e:  # noqa: BLE001 - one broken scenario must not lose the others' figures
                traceback.print_exc()
                head.setdefault("harness_errors", []).append(f"{name}: {type(e).__name__}: {e}")
                got = []
            rows += [{"what": WHAT[r["scenario"]], **r} for r in (got if isinstance(got, list) else [got])]
            # written after each scenario, so a run cut short still leaves its figures
            report(rows, head, args, t0, done=i + 1 == len(names))
    finally:
        if ctx.sim is not None:
            ctx.sim.stop()
    print()
    print(table([cells(r) for r in rows], HEADERS))
    for r in rows:
        for p in problems(r):
            print(f"PROBLEM {r['scenario']}: {p}")
    print(f"\n{head['wall_s']:.0f} s in all")


def report(rows: list[dict[str, Any]], head: dict[str, Any], args: argparse.Namespace, t0: float, done: bool) -> None:
    head["load_after"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    head["ended"] = time.strftime("%H:%M", time.gmtime()) + ("" if done else " (still running)")
    head["wall_s"] = round(time.monotonic() - t0, 1)
    head["ray_restarts"] = RAY_RESTARTS
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "reliability.json").write_text(json.dumps({"header": head, "quick": args.quick, "rows": rows}, indent=1))
    if not args.quick and not args.only:
        text = RESULTS.read_text() if RESULTS.is_file() else ""
        notes = "\n## Notes" + text.split("\n## Notes", 1)[1] if "\n## Notes" in text else ""
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(markdown(rows, head) + notes)


if __name__ == "__main__":
    main()
