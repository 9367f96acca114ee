"""Numeric core of the time-series generator: all fields of one series at once, in numpy.

``value = level + trend + seasonalities + level shifts + noise + anomalies``, then clipped to the
field's range, rounded, and blanked at missing positions. Each ingredient draws from its own
seeded stream (noise, anomalies, missing), so changing one leaves the others' draws unchanged:
a series with and without anomalies differs exactly at the labelled points.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from synth.generators.common import numpy_rng
from synth.generators.tsparams import Anomaly, FieldParams, FieldSpec, SeriesParams

ANOMALY_KINDS = ("spike", "dip", "drift")  # label codes 1, 2, 3; 0 is "no anomaly"


@dataclass(frozen=True)
class Planted:
    """One anomaly instance as planted: rows ``start:stop`` carry its label."""

    kind: str
    field: str | None  # None: every field
    start: int
    stop: int
    magnitude: float


@dataclass
class SeriesArrays:
    values: dict[str, np.ndarray]  # float64 per field, clipped and rounded
    missing: dict[str, np.ndarray | None]  # True where the value is left empty
    anomaly_code: np.ndarray  # int8 per row: 0 none, else 1 + index in ANOMALY_KINDS
    anomaly_field: np.ndarray  # int16 per row: -1 none, len(fields) for every field, else field index
    planted: list[Planted]
    dropped: int  # anomaly instances left out because they overlapped an earlier one


def ar1_filter(e: np.ndarray, phi: float, block: int = 64) -> np.ndarray:
    """``y[t] = phi * y[t-1] + e[t]`` (``y[-1] = 0``), vectorised.

    Each block of ``block`` points is filtered by one small matrix product; the carry between
    blocks is itself an AR(1) in ``phi**block`` over the block ends, solved the same way."""
    n = e.size
    if n == 0 or phi == 0.0:
        return e.astype(np.float64, copy=True)
    b = min(block, n)
    nb = -(-n // b)
    padded = np.zeros(nb * b)
    padded[:n] = e
    kernel_t, carry = _ar1_kernel(float(phi), b)
    y = padded.reshape(nb, b) @ kernel_t
    if nb > 1:
        ends = ar1_filter(y[:, -1].copy(), float(phi) ** b, block)
        y[1:] += np.outer(ends[:-1], carry)
    return y.reshape(-1)[:n]


@functools.lru_cache(maxsize=256)
def _ar1_kernel(phi: float, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Transposed lower-triangular ``phi**(i-j)`` and the carry weights ``phi**(i+1)``."""
    i = np.arange(b)
    lag = i[:, None] - i[None, :]
    kernel_t, carry = np.where(lag >= 0, phi ** np.clip(lag, 0, None), 0.0).T.copy(), phi ** (i + 1.0)
    kernel_t.flags.writeable = carry.flags.writeable = False  # shared by every caller
    return kernel_t, carry


def correlation_factor(params: SeriesParams, names: list[str]) -> np.ndarray | None:
    """Cholesky factor of the fields' noise correlation, repaired to the nearest valid matrix."""
    if not params.correlations or len(names) < 2:
        return None
    return _cholesky(tuple(names), tuple((c.a, c.b, c.rho) for c in params.correlations))


@functools.lru_cache(maxsize=256)
def _cholesky(names: tuple[str, ...], pairs: tuple[tuple[str, str, float], ...]) -> np.ndarray:
    idx = {n: i for i, n in enumerate(names)}
    c = np.eye(len(names))
    for a_name, b_name, rho in pairs:
        a, b = idx[a_name], idx[b_name]
        c[a, b] = c[b, a] = rho
    w, v = np.linalg.eigh(c)
    if w.min() < 1e-6:  # not positive definite: clip eigenvalues, rescale to a unit diagonal
        c = (v * np.maximum(w, 1e-6)) @ v.T
        d = np.sqrt(np.diag(c))
        c = c / np.outer(d, d)
    factor = np.linalg.cholesky(c)
    factor.flags.writeable = False  # shared by every caller
    return factor


def _trend(p: FieldParams, u: np.ndarray) -> np.ndarray | float:
    t = p.trend
    if t.kind == "linear":
        return t.change * u
    if t.kind == "exponential":
        return t.change * np.expm1(t.curvature * u) / np.expm1(t.curvature)
    if t.kind == "piecewise" and t.knots:
        knots = sorted(t.knots, key=lambda k: k.at)
        xs = [k.at for k in knots]
        ys = [k.value for k in knots]
        if xs[0] > 0:
            xs, ys = [0.0, *xs], [0.0, *ys]
        return np.interp(u, xs, ys)
    return 0.0


def _noise(p: FieldParams, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    nz = p.noise
    if nz.scale == 0.0:
        return np.zeros_like(z)
    if nz.kind == "student_t":  # unit-variance t: normal over sqrt(chi2/df), rescaled
        w = rng.chisquare(nz.df, size=z.size)
        return nz.scale * np.sqrt((nz.df - 2) / nz.df) * z / np.sqrt(w / nz.df)
    if nz.kind == "ar1":  # stationary from the first point: variance scale**2 throughout
        e = z * np.sqrt(1 - nz.phi**2)
        e[0] = z[0]
        return nz.scale * ar1_filter(e, nz.phi)
    return nz.scale * z


def place_anomalies(
    anomalies: list[Anomaly], n: int, rng: np.random.Generator, jitter: float = 0.0
) -> tuple[list[Planted], int]:
    """Instances with their rows. Random ones sit in disjoint slots; any instance that overlaps
    an earlier-starting one is dropped, so every labelled row belongs to exactly one anomaly.
    ``jitter`` moves fixed positions by up to ``jitter / 2`` of the series."""
    found: list[Planted] = []
    for a in anomalies:
        d = min(a.points, n)
        if a.at is not None:
            at = min(max(a.at + jitter * rng.uniform(-0.5, 0.5), 0.0), 1.0) if jitter else a.at
            start = int(round(at * (n - d)))
            found.append(Planted(a.kind, a.field, start, start + d, a.magnitude))
            continue
        slot = min(2 * d, n)
        slots = max(n // slot, 1)
        k = min(a.count, slots)
        starts = rng.choice(slots, size=k, replace=False) * slot + rng.integers(0, slot - d + 1, size=k)
        found += [Planted(a.kind, a.field, int(s), int(s) + d, a.magnitude) for s in starts]
    found.sort(key=lambda p: p.start)
    kept: list[Planted] = []
    for p in found:
        if not kept or p.start >= kept[-1].stop:
            kept.append(p)
    return kept, len(found) - len(kept)


def synthesize(
    params: SeriesParams,
    fields: list[FieldSpec],
    *,
    start_s: float,
    step_s: float,
    n: int,
    seed: int,
    jitter: float = 0.0,
) -> SeriesArrays:
    """All fields of one series of ``n`` points starting at ``start_s`` (Unix seconds).

    ``jitter`` varies the parameters of this series: the level by up to ``jitter`` times half
    the field's range (or its own size), trend change, amplitudes and noise scale by up to
    ``jitter`` relative, phases by up to ``jitter`` of a cycle, fixed anomaly positions by up to
    ``jitter / 2`` of the series."""
    names = [f.name for f in fields]
    idx = np.arange(n, dtype=np.float64)
    u = idx / (n - 1) if n > 1 else np.zeros(n)
    noise_rng = numpy_rng(seed, "noise")
    z = noise_rng.standard_normal((n, len(fields)))
    factor = correlation_factor(params, names)
    if factor is not None:
        z = z @ factor.T
    jitter_rng = numpy_rng(seed, "jitter") if jitter > 0 else None
    values: dict[str, np.ndarray] = {}
    for j, f in enumerate(fields):
        p = params.fields.get(f.name) or FieldParams()
        level = (
            p.level
            if p.level is not None
            else ((f.min + f.max) / 2 if f.min is not None and f.max is not None else 0.0)
        )
        # multipliers: level offset, trend, noise, then (amplitude, phase) per seasonality
        r = (
            jitter * jitter_rng.uniform(-1, 1, 3 + 2 * len(p.seasonality))
            if jitter_rng
            else np.zeros(3 + 2 * len(p.seasonality))
        )
        level += r[0] * (f.span / 2 if f.span is not None else abs(level))
        v = np.full(n, float(level))
        v += _trend(p, u) * (1 + r[1])
        for k, s in enumerate(p.seasonality):
            # the fractional part first keeps precision with epoch-sized start times
            cycles = (start_s / s.period) % 1.0 + idx * (step_s / s.period) - (s.phase + r[4 + 2 * k])
            v += s.amplitude * (1 + r[3 + 2 * k]) * np.cos(2 * np.pi * cycles)
        for sh in p.shifts:
            v[int(round(sh.at * (n - 1))) :] += sh.delta
        v += _noise(p, np.ascontiguousarray(z[:, j]), noise_rng) * (1 + r[2])
        values[f.name] = v

    planted, dropped = (
        place_anomalies(params.anomalies, n, numpy_rng(seed, "anomalies"), jitter) if params.anomalies else ([], 0)
    )
    code = np.zeros(n, dtype=np.int8)
    which = np.full(n, -1, dtype=np.int16)
    for a in planted:
        rows = slice(a.start, a.stop)
        length = a.stop - a.start
        bump = {"spike": a.magnitude, "dip": -a.magnitude}.get(a.kind)
        effect = bump if bump is not None else a.magnitude * np.arange(1, length + 1) / length
        for name in names if a.field is None else [a.field]:
            values[name][rows] += effect
        code[rows] = 1 + ANOMALY_KINDS.index(a.kind)
        which[rows] = len(names) if a.field is None else names.index(a.field)

    missing_rng = numpy_rng(seed, "missing") if params.missing_rate > 0 else None
    missing: dict[str, np.ndarray | None] = {}
    for f in fields:
        v = values[f.name]
        if f.min is not None or f.max is not None:
            np.clip(v, f.min, f.max, out=v)
        if f.type == "int":
            np.rint(v, out=v)
        elif f.decimals is not None:
            np.round(v, f.decimals, out=v)
        missing[f.name] = missing_rng.random(n) < params.missing_rate if missing_rng is not None else None
    return SeriesArrays(values, missing, code, which, planted, dropped)


__all__ = [
    "ANOMALY_KINDS",
    "Planted",
    "SeriesArrays",
    "ar1_filter",
    "correlation_factor",
    "place_anomalies",
    "synthesize",
]
