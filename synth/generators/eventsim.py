"""Numeric core of the events generator: Poisson arrivals and funnel walks, in numpy.

Arrivals are a non-homogeneous Poisson process drawn by thinning: candidates at the peak rate,
each kept with probability ``rate(t) / peak``. Sessions walk the funnel as a Markov chain, all
sessions of a unit advancing one step at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.generators.eventmodel import END, EventCatalog, RateProfile, Sessions
from synth.generators.samplers import Sampler


def arrivals(
    rng: np.random.Generator, rate_per_s: float, profile: RateProfile, t0_s: float, span_s: float
) -> np.ndarray:
    """Sorted arrival offsets (seconds after ``t0_s``) in ``[0, span_s)``; mean rate ``rate_per_s``
    shaped by ``profile`` at Unix time ``t0_s + offset``."""
    peak = profile.max_factor
    k = int(rng.poisson(rate_per_s * peak * span_s))
    t = rng.random(k) * span_s
    if peak != 1.0 or profile.daily_amplitude:
        t = t[rng.random(k) * peak < profile.factor(t0_s + t)]
    t.sort()
    return t


@dataclass
class Funnel:
    """A session structure as arrays: ``entry`` (T,) and ``step`` (T, T+1), last column = end."""

    entry: np.ndarray
    step: np.ndarray

    @classmethod
    def of(cls, catalog: EventCatalog, sessions: Sessions) -> Funnel:
        index = {t.name: i for i, t in enumerate(catalog.types)}
        k = len(index)
        entry = np.zeros(k)
        for name, w in sessions.entry.items():
            entry[index[name]] = w
        step = np.zeros((k, k + 1))
        for src, row in sessions.transitions.items():
            for dst, p in row.items():
                step[index[src], k if dst == END else index[dst]] += p
        step[:, k] += np.clip(1.0 - step[:, :k].sum(axis=1) - step[:, k], 0.0, None)
        return cls(entry / entry.sum(), step / step.sum(axis=1, keepdims=True))


@dataclass
class Walk:
    session: np.ndarray  # index into the session starts
    seq: np.ndarray  # position within the session, from 0
    type: np.ndarray  # event type index
    t: np.ndarray  # seconds after the window start


def walk(
    rng: np.random.Generator, starts: np.ndarray, funnel: Funnel, gap: Sampler, max_events: int, span_s: float
) -> Walk:
    """Events of sessions starting at ``starts``; events at or after ``span_s`` are left out."""
    k = funnel.entry.size
    cum = np.cumsum(funnel.step, axis=1)
    live = np.arange(starts.size)
    state = rng.choice(k, size=starts.size, p=funnel.entry)
    t = starts.astype(np.float64, copy=True)
    parts: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = []
    for seq in range(max_events):
        parts.append((live, seq, state, t))
        if seq == max_events - 1 or live.size == 0:
            break
        nxt = np.minimum((rng.random(live.size)[:, None] >= cum[state]).sum(axis=1), k)
        go = nxt < k
        live, state = live[go], nxt[go]
        t = t[go] + np.maximum(np.asarray(gap.sample(rng, live.size), dtype=np.float64), 0.0)
        inside = t < span_s
        live, state, t = live[inside], state[inside], t[inside]
    return Walk(
        session=np.concatenate([p[0] for p in parts]),
        seq=np.concatenate([np.full(p[0].size, p[1], dtype=np.int32) for p in parts]),
        type=np.concatenate([p[2] for p in parts]),
        t=np.concatenate([p[3] for p in parts]),
    )


__all__ = ["Funnel", "Walk", "arrivals", "walk"]
