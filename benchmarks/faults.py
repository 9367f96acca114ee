"""What the reliability benchmark needs around a whole ``synth run``: the run in a subprocess with its
process tree watched (so processes it leaves behind can be found after it ends), what its output
holds as the product's own reader sees it, whether its exit code tells the truth, and a scan for
key values in everything it wrote or printed."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil
from common import PYTHON, ROOT, run_env

ANSWERED_DEAD = ("malformed_output",)  # dead letters that were paid answers (output invalid after re-asks)
SECRETS: list[str] = []  # the key values to look for, set by the benchmark
LEFTOVER_AFTER_S = 10.0  # a process of the run still alive this long after it exited is left over
EXIT_MEANING = {
    0: "complete",
    1: "shards left",
    2: "bad job / provider",
    3: "storage",
    4: "budget",
    5: "no usable key",
    6: "too many dead letters",
    7: "stopped early",
}


_RUNS = itertools.count()


class Run:
    """``python -m synth run JOB -o OUT -q --no-cache [ARGS]`` in a subprocess. A thread lists the
    run's descendants every ``interval`` seconds (psutil), so the ones still alive
    ``LEFTOVER_AFTER_S`` after it exits can be named."""

    def __init__(self, job: Path, out: str, *, args: Iterable[str] = (), env: dict[str, str], interval: float = 0.25):
        self.again = lambda: Run(job, out, args=args, env=env, interval=interval)  # the same command anew
        self.job = job
        self.log = job.parent / f"run-{next(_RUNS):03d}.log"  # its exit code, stdout and stderr
        cmd = [PYTHON, "-m", "synth", "run", str(job), "-o", out, "-q", "--no-cache", *args]
        self.start = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env(env), cwd=ROOT
        )
        self.stdout = self.stderr = ""
        self.ended: float | None = None
        self.seen: dict[tuple[int, float], str] = {}  # (pid, create_time) -> what it was
        self._readers = [
            threading.Thread(target=self._read, args=("stdout",), daemon=True),
            threading.Thread(target=self._read, args=("stderr",), daemon=True),
        ]
        for t in self._readers:
            t.start()
        self._interval = interval
        self._watch = threading.Thread(target=self._watch_tree, daemon=True)
        self._watch.start()

    def _read(self, name: str) -> None:
        stream = getattr(self.proc, name)
        setattr(self, name, stream.read() if stream else "")

    def _watch_tree(self) -> None:
        root = psutil.Process(self.proc.pid)
        while True:
            try:
                kids = root.children(recursive=True)
            except psutil.Error:
                kids = []
            for p in kids:
                with contextlib.suppress(psutil.Error):
                    key = (p.pid, p.create_time())
                    if key not in self.seen:
                        cmd = p.cmdline()
                        self.seen[key] = (cmd[0] if cmd and cmd[0].startswith("ray::") else p.name())[:40]
            if self.proc.poll() is not None:
                return
            time.sleep(self._interval)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None and self.ended is None:
            self.ended = time.monotonic()
        return code

    def wait(self, timeout: float) -> int:
        """The exit code; past ``timeout`` the run is stopped (SIGTERM, then SIGKILL) and ``-999`` kept."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
                self.proc.wait(30)
            self.timed_out = True
        self.poll()
        self._watch.join(5)
        for t in self._readers:
            t.join(10)
        self.log.write_text(f"exit {self.proc.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")
        return self.proc.returncode

    timed_out = False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    @property
    def wall_s(self) -> float:
        return (self.ended or time.monotonic()) - self.start

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def leftovers(self, reap: bool = True) -> list[str]:
        """The run's descendants still alive ``LEFTOVER_AFTER_S`` after it exited (waiting for that
        moment if it has not come yet). With ``reap``, they are then stopped by their PIDs: they
        are this benchmark's processes, and would weigh on the scenarios after it."""
        assert self.ended is not None, "leftovers() of a run that has not ended"
        time.sleep(max(0.0, self.ended + LEFTOVER_AFTER_S - time.monotonic()))
        alive = []
        for (pid, created), name in self.seen.items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append((p, name))
        if reap:
            for p, _ in alive:
                with contextlib.suppress(psutil.Error):
                    p.kill()
        return [f"{name} (pid {p.pid})" for p, name in alive]


RAY_DID_NOT_START = "timed out during startup"
RAY_RESTARTS: list[str] = []  # runs started again because their embedded Ray did not start (machine load)


def finish(run: Run, timeout: float) -> Run:
    """Wait for ``run``; if its embedded Ray did not start (a loaded machine: nothing was made or
    bought), start the same command once more and wait for that one (noted in RAY_RESTARTS)."""
    run.wait(timeout)
    if run.proc.returncode != 0 and RAY_DID_NOT_START in run.stderr:
        RAY_RESTARTS.append(str(run.log))
        run = run.again()
        run.wait(timeout)
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], Any], timeout: float, what: str, run: Run | None = None, step: float = 0.1) -> bool:
    """Poll an observable condition; False if ``run`` ended first, SystemExit past ``timeout``."""
    end = time.monotonic() + timeout
    while not cond():
        if run is not None and run.poll() is not None:
            return False
        if time.monotonic() > end:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)
    return True


# ---------------------------------------------------------------- what an output holds


def read_output(uri: str, storage: dict[str, Any] | None = None, fs: Any = None) -> dict[str, Any]:
    """stats.json and the committed ids (through ``synth.open``, the product's reader, which reads
    only what the manifest commits)."""
    import synth

    stats: dict[str, Any] = {}
    if fs is None:
        f = Path(uri) / "stats.json"
        if f.is_file():
            stats = json.loads(f.read_text())
    else:
        fs.invalidate_cache()
        with contextlib.suppress(FileNotFoundError):
            stats = json.loads(fs.cat_file(f"{uri.removeprefix('s3://')}/stats.json"))
    ids: list[str] = []
    with contextlib.suppress(Exception):  # nothing committed yet: no dataset
        ids = synth.open(uri, storage).to_table(columns=["id"])["id"].to_pylist()
    return {"stats": stats, "ids": len(ids), "unique_ids": len(set(ids))}


def summary(held: dict[str, Any], planned: int) -> dict[str, Any]:
    st = held["stats"]
    reasons = {r["kind"]: r["count"] for r in st.get("failure_reasons") or []}
    req = st.get("requests") or {}
    return {
        "planned": planned,
        "records": held["unique_ids"],
        "rows_read": held["ids"],
        "dead_letters": st.get("dead_letters"),
        "dead_reasons": reasons,
        "dead_by_kind": st.get("dead_by_kind") or {},
        "complete": bool(st.get("complete")),
        "reasks": req.get("reasks", 0),
        "retries": req.get("retries", 0),
        "abandoned": req.get("abandoned", 0),
        "journal_hits": (st.get("answers") or {}).get("journal_hits", 0),
        "keys_disabled": (st.get("keys") or {}).get("disabled", []),
        "max_dead_letter_rate": st.get("max_dead_letter_rate", 0.01),
    }


def truthful(code: int, s: dict[str, Any], stderr: str) -> tuple[bool, str]:
    """Whether the exit code says what the output holds (README: 0 only when complete with at most
    max_dead_letter_rate dead letters; otherwise the documented non-zero code and an error line)."""
    planned, recs, dead = s["planned"], s["records"], s["dead_letters"] or 0
    whole = s["rows_read"] == recs and recs + dead == planned
    if code == 0:
        ok = s["complete"] and whole and dead <= s["max_dead_letter_rate"] * planned
        return ok, "" if ok else f"exit 0 with {recs} unique of {s['rows_read']} rows + {dead} dead of {planned}"
    said = any(line.startswith("error:") for line in stderr.splitlines())
    if code == 6:
        ok = s["complete"] and whole and dead > s["max_dead_letter_rate"] * planned and said
    elif code in (1, 3, 4, 5, 7):
        ok = not s["complete"] and said
    else:
        ok = False
    return ok, "" if ok else f"exit {code} ({EXIT_MEANING.get(code, '?')}), complete {s['complete']}, error line {said}"


# ---------------------------------------------------------------- key values anywhere


def scan_dir(root: Path, secrets: list[str]) -> list[str]:
    found = []
    if not root.exists():
        return found
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and not p.is_socket():
            try:
                data = p.read_bytes()
            except OSError:
                continue
            found += [f"{p}" for s in secrets if s.encode() in data]
    return found


def scan_s3(fs: Any, prefix: str, secrets: list[str]) -> list[str]:
    found = []
    fs.invalidate_cache()  # s3fs caches listings: the run has written since
    for path in fs.find(prefix):
        with contextlib.suppress(FileNotFoundError):  # replaced meanwhile (a commit rewritten)
            data = fs.cat_file(path)
            found += [f"s3://{path}" for s in secrets if s.encode() in data]
    return found


def scan_text(text: str, secrets: list[str], where: str) -> list[str]:
    return [where for s in secrets if s in text]


# ---------------------------------------------------------------- one scenario's row


def row(
    name: str,
    runs: list[Run],
    planned: int,
    sim_stats: dict[str, Any],
    ray_tmp: Path,
    out: Path | None,
    *,
    expected: Iterable[int] = (0,),
    held: dict[str, Any] | None = None,
    scan: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    bought_before: int = 0,
) -> dict[str, Any]:
    """One scenario's figures; a local ``out`` is read back and scanned here, an S3 one by the caller
    (``held``, ``scan``). ``bought_before``: answers of these records paid before the simulator's
    counters were last reset."""
    if out is not None:
        held, scan = read_output(str(out)), scan_dir(out, SECRETS)
    assert held is not None and scan is not None
    expected = set(expected)
    last, paid, r429 = runs[-1], sim_stats["ok"], sim_stats["rate_limited"]
    s = summary(held, planned)
    true, why = truthful(last.proc.returncode, s, last.stderr)
    needed = s["records"] + sum(s["dead_by_kind"].get(k, 0) for k in ANSWERED_DEAD) + s["reasks"] - bought_before
    leftovers = [p for r in runs for p in r.leftovers()]
    keys_found = scan + scan_dir(ray_tmp, SECRETS)
    keys_found += [f for i, r in enumerate(runs) for f in scan_text(r.output, SECRETS, f"run {i} output")]
    shutil.rmtree(ray_tmp, ignore_errors=True)
    r = {
        "scenario": name,
        **s,
        "exit": last.proc.returncode,
        "exits": [x.proc.returncode for x in runs],
        "expected_exit": sorted(expected),
        "truthful": true and last.proc.returncode in expected,
        "truth_note": why or ("" if last.proc.returncode in expected else f"expected {sorted(expected)}"),
        "wall_s": round(sum(x.wall_s for x in runs), 1),
        "paid": paid,
        "needed": needed,
        "paid_twice": paid - needed,
        "r429": r429,
        "descendants_seen": sum(len(x.seen) for x in runs),  # what the leftover check looked at
        "leftovers": leftovers,
        "keys_found": keys_found,
        "error_line": next((ln for ln in last.stderr.splitlines() if ln.startswith("error:")), ""),
        **(extra or {}),
    }
    print(
        f"  {name}: exit {r['exit']} (truthful {r['truthful']}), {r['records']}/{planned} records, "
        f"{r['dead_letters']} dead, paid {paid} (twice {r['paid_twice']}), 429s {r429}, "
        f"{len(leftovers)} left over, {len(keys_found)} keys found, {r['wall_s']} s",
        flush=True,
    )
    return r


# ---------------------------------------------------------------- report


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": sys.version.split()[0]}
    for pkg in ("synth", "ray", "pyarrow", "moto"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - a missing package is reported as such
            out[pkg] = "?"
    return out


def cells(r: dict[str, Any]) -> list[Any]:
    reasons = ", ".join(f"{k} {v}" for k, v in r["dead_reasons"].items())
    dead = f"{r['dead_letters']}" + (f" ({reasons})" if reasons else "")
    n = len(r["exits"])
    exits = "/".join(map(str, r["exits"])) if n <= 3 else f"{r['exits'][-1]} (after {n - 1} runs)"
    return [
        r["scenario"],
        r["planned"],
        r["records"],
        dead,
        f"{exits} ({'yes' if r['truthful'] else 'NO'})",
        f"{r['wall_s']:.0f}",
        r["paid"],
        r["paid_twice"],
        r["r429"],
        len(r["leftovers"]),
        len(r["keys_found"]),
    ]


HEADERS = "scenario|planned|recorded|dead letters|exit (truthful)|wall s|answers paid|paid twice|429s".split("|")
HEADERS += ["left over", "keys found"]


def problems(r: dict[str, Any]) -> list[str]:
    p = []
    lost = r["planned"] - r["records"] - (r["dead_letters"] or 0)
    if r["exit"] == 0 and lost:
        p.append(f"exit 0 with {lost} units neither recorded nor dead-lettered")
    if r["rows_read"] != r["records"]:
        p.append(f"{r['rows_read'] - r['records']} duplicate ids")
    if not r["truthful"]:
        p.append(f"exit code not truthful: {r['truth_note']}")
    if r["paid_twice"] > 0:
        p.append(f"{r['paid_twice']} answers paid twice")
    if r["leftovers"]:
        p.append("left over after 10 s: " + ", ".join(r["leftovers"][:6]) + (" ..." if len(r["leftovers"]) > 6 else ""))
    if r["keys_found"]:
        p.append("key values found in: " + ", ".join(r["keys_found"][:6]))
    return p


def detail(r: dict[str, Any]) -> str:
    bits = [f"exits {r['exits']}", f"retries {r['retries']}", f"re-asks {r['reasks']}", f"abandoned {r['abandoned']}"]
    shown = "rate_per_s rate_of_true kills kill_moments_s revoked_at_commits went_down_mid_run outage_mid_run"
    for k in (
        shown + " stopped_exit_truthful first_exit_truthful paid_before_resume journal_hits keys_disabled"
    ).split():
        if r.get(k) not in (None, [], ""):
            bits.append(f"{k} {r[k]}")
    if r["error_line"]:
        bits.append(f"error line: `{r['error_line'][:200]}`")
    for k in ("stopped_error_line", "first_error_line"):
        if r.get(k):
            bits.append(f"the stopped run's error line: `{r[k][:200]}`")
    return "; ".join(str(b) for b in bits)


def markdown(rows: list[dict[str, Any]], head: dict[str, Any]) -> str:
    lines = [
        "# Reliability: the fault matrix, end to end",
        "",
        f"Command: `{head['command']}`  ",
        f"Machine: {head['cpus']} CPUs, load average {head['load_before']} before and {head['load_after']} after; "
        f"{head['started']} to {head['ended']} UTC  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in head["versions"].items()),
        "",
        *(
            [f"{len(head['ray_restarts'])} run(s) started again: their embedded Ray did not start in time.", ""]
            * bool(head.get("ray_restarts"))
        ),
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
        *("| " + " | ".join(str(c) for c in cells(r)) + " |" for r in rows),
        "",
        *(f"Not measured (the benchmark itself failed): {e}  " for e in head.get("harness_errors", [])),
        "Answers paid are the simulator's 200s; paid twice is that minus what the units needed (one",
        "answer per unit that got one, plus re-asks). Left over: processes of the run alive 10 s after",
        "it exited. Keys found: files of the output and of the run's Ray session folder, and the",
        "command's output, holding a key value.",
        "",
        "## Per scenario",
        "",
    ]
    for r in rows:
        lines.append(f"- **{r['scenario']}** ({r['what']}): {detail(r)}")
        lines += [f"  - PROBLEM: {p}" for p in problems(r)]
    return "\n".join(lines) + "\n"
