"""Expected wait time (EWT) for a caller in an agent queue: pure, stdlib-only, no I/O.

The webhooks build a `QueueSnapshot` from live Redis state and call `estimate_wait`, then
`spoken_range` for what the caller hears. `bench/waitsim.py` calls the very same functions from a
simulated call center, so what the benchmark scores is what callers are told.

Model (reference: /work/shared/reference/wait-time-estimation.md, sections 4-5). With s agents
that can serve the queue, each busy for a mean handle time 1/mu, and waiting callers who give up
at rate theta each (exponential patience), the number of callers ahead of ours falls at rate
s*mu + j*theta while j callers are ahead (an agent frees up, or one of them hangs up). The wait of
a caller with n callers ahead (and no idle agent) is therefore a sum of n + 1 independent
exponential stages, a hypoexponential distribution with

    mean     = sum_{j=0..n} 1 / (s*mu + j*theta)          (the "QL_m" predictor)
    variance = sum_{j=0..n} 1 / (s*mu + j*theta)**2

With theta = 0 it reduces to the plain queue-length predictor (n + 1) / (s*mu). The announced
range is the 10-90 % range of a gamma distribution with that mean and variance.

Exponential patience is memoryless, so a re-announcement needs no history: the remaining wait of a
caller who has already waited depends only on how many callers are ahead of it now.

Rolling inputs (`HandleTimeStats`, `AbandonmentStats`) are update rules over small frozen state
records of plain numbers, so the Redis layer can keep each one in a hash and apply the rule in a
transaction. Times are seconds on any clock (epoch seconds live, simulated seconds in the bench).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from statistics import NormalDist
from typing import Any, Literal

__all__ = [
    "AbandonmentState",
    "AbandonmentStats",
    "DecayedMeanState",
    "HandleTimeStats",
    "QueueSnapshot",
    "SpokenWait",
    "WaitEstimate",
    "estimate_wait",
    "gamma_quantile",
    "hypoexp_moments",
    "spoken_range",
]

# Sums up to this many stages are added term by term; longer ones use digamma/trigamma.
_LOOP_MAX_STAGES = 48
# From this gamma shape on, Wilson-Hilferty is used as is for 0.05 <= p <= 0.95 (relative error < 2.5e-4).
_WH_MIN_SHAPE = 20.0


# --------------------------------------------------------------------------- the estimate


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """What the live system knows about one queue (skill + language) at one moment.

    ahead:              callers ahead of this one in its queue (callback seats included);
                        0 for the caller at the head.
    agents_staffed:     agents logged in who can serve this queue and language.
    agents_busy:        those of them now on a call or in wrap-up that blocks them.
    aht_s:              rolling mean handle time, wrap-up included if it blocks the agent
                        (`HandleTimeStats.value`).
    abandon_rate_per_s: hang-ups per waiting caller per second (`AbandonmentStats.rate`).
    """

    ahead: int
    agents_staffed: int
    agents_busy: int
    aht_s: float
    abandon_rate_per_s: float = 0.0


Status = Literal["wait", "immediate", "no_agents"]


@dataclass(frozen=True, slots=True)
class WaitEstimate:
    """Predicted remaining wait, in seconds.

    status "wait":       point_s is the conditional mean, [lo_s, hi_s] the quantile range.
    status "immediate":  an idle agent will take the call now: all figures 0.
    status "no_agents":  nobody staffed can take the call: all figures are math.inf.
    """

    status: Status
    point_s: float
    lo_s: float
    hi_s: float
    sd_s: float

    @property
    def known(self) -> bool:
        return self.status != "no_agents"


_IMMEDIATE = WaitEstimate("immediate", 0.0, 0.0, 0.0, 0.0)
_NO_AGENTS = WaitEstimate("no_agents", math.inf, math.inf, math.inf, math.inf)


def estimate_wait(snapshot: QueueSnapshot, *, lo_q: float = 0.10, hi_q: float = 0.90) -> WaitEstimate:
    """Conditional mean wait (QL_m) and its [lo_q, hi_q] quantile range for one caller.

    Idle agents (staffed - busy) take the first callers at once: a caller with fewer callers ahead
    than idle agents is answered immediately, and otherwise `ahead - idle` callers remain ahead of
    it when every agent is busy. Inconsistent counters (busy > staffed, negative numbers) are
    clamped rather than trusted. Raises ValueError for a non-positive or non-finite handle time or
    a negative or non-finite abandonment rate: the stats classes never produce those.
    """
    staffed = int(snapshot.agents_staffed)
    if staffed <= 0:
        return _NO_AGENTS
    aht = snapshot.aht_s
    theta = snapshot.abandon_rate_per_s
    if not (aht > 0.0 and math.isfinite(aht)):
        raise ValueError(f"aht_s must be positive and finite, not {aht!r}")
    if not (theta >= 0.0 and math.isfinite(theta)):
        raise ValueError(f"abandon_rate_per_s must be >= 0 and finite, not {theta!r}")
    busy = min(max(int(snapshot.agents_busy), 0), staffed)
    ahead = max(int(snapshot.ahead), 0) - (staffed - busy)
    if ahead < 0:
        return _IMMEDIATE
    mean, var = hypoexp_moments(ahead, staffed / aht, theta)
    lo, hi = _gamma_range(mean, var, lo_q, hi_q)
    return WaitEstimate("wait", mean, lo, hi, math.sqrt(var))


def hypoexp_moments(ahead: int, service_rate: float, theta: float) -> tuple[float, float]:
    """Mean and variance of sum_{j=0..ahead} Exp(service_rate + j*theta).

    service_rate is s*mu, the rate at which busy agents free up (per second). Exact: a loop for
    short queues, the digamma / trigamma closed forms for long ones (O(1) for any length).
    """
    stages = ahead + 1
    if theta <= 0.0 or theta * stages <= 1e-9 * service_rate:
        # No abandonment (or too little to matter at this queue length): Gamma(n+1, s*mu).
        return stages / service_rate, stages / (service_rate * service_rate)
    if stages <= _LOOP_MAX_STAGES:
        mean = var = 0.0
        rate = service_rate
        for _ in range(stages):
            inv = 1.0 / rate
            mean += inv
            var += inv * inv
            rate += theta
        return mean, var
    x = service_rate / theta
    mean = (_digamma(x + stages) - _digamma(x)) / theta
    var = (_trigamma(x) - _trigamma(x + stages)) / (theta * theta)
    return mean, var


def _digamma(x: float) -> float:
    """psi(x) for x > 0: recurrence up to x >= 6, then the asymptotic series (error < 1e-13)."""
    acc = 0.0
    while x < 6.0:
        acc -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    series = f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f * (1 / 240 - f / 132))))
    return acc + math.log(x) - 0.5 / x - series


def _trigamma(x: float) -> float:
    """psi'(x) for x > 0: recurrence up to x >= 6, then the asymptotic series (error < 1e-12)."""
    acc = 0.0
    while x < 6.0:
        acc += 1.0 / (x * x)
        x += 1.0
    f = 1.0 / (x * x)
    return acc + 1.0 / x + 0.5 * f + (f / x) * (1 / 6 - f * (1 / 30 - f * (1 / 42 - f / 30)))


# --------------------------------------------------------------------------- gamma quantiles

_NORMAL = NormalDist()
_Z_CACHE: dict[float, float] = {}


def _z(p: float) -> float:
    z = _Z_CACHE.get(p)
    if z is None:
        z = _Z_CACHE[p] = _NORMAL.inv_cdf(p)
    return z


def _gamma_range(mean: float, var: float, lo_q: float, hi_q: float) -> tuple[float, float]:
    shape = mean * mean / var
    scale = var / mean
    return gamma_quantile(lo_q, shape, scale), gamma_quantile(hi_q, shape, scale)


def gamma_quantile(p: float, shape: float, scale: float = 1.0, *, exact: bool = False) -> float:
    """The p-quantile of Gamma(shape, scale), 0 < p < 1, shape >= 0.5. Pure Python.

    The Wilson-Hilferty cube-root normal approximation, used as is for 0.05 <= p <= 0.95 once
    shape >= 20 (relative error < 2.5e-4; the long-queue case). Otherwise, or with exact=True,
    Halley steps on the regularized incomplete gamma P(shape, x) polish it to 1e-7 or better.
    A few microseconds to about 20.
    """
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    if shape < 0.5:
        raise ValueError("shape must be >= 0.5")
    k = shape
    if k == 1.0:
        return -math.log1p(-p) * scale  # exponential
    c = 1.0 / (9.0 * k)
    t = 1.0 - c + _z(p) * math.sqrt(c)
    x = k * t * t * t if t > 0.0 else 0.0
    if x <= 1e-8 * k:
        # Far lower tail: P(k, x) ~ x^k / Gamma(k+1).
        x = math.exp((math.log(p) + math.lgamma(k + 1.0)) / k)
    if k >= _WH_MIN_SHAPE and not exact and 0.05 <= p <= 0.95:
        return x * scale
    log_norm = math.lgamma(k)
    tol = 1e-12 if exact else 1e-4
    for _ in range(20):  # Halley's method: cubic convergence, 2 steps from Wilson-Hilferty
        newton = (_reg_lower_gamma(k, x) - p) / math.exp((k - 1.0) * math.log(x) - x - log_norm)
        step = newton / max(1.0 + 0.5 * newton * ((k - 1.0) / x - 1.0), 0.5)
        if step >= x:  # keep x positive
            step = 0.5 * x
        x -= step
        if abs(step) <= tol * x:  # the error left after a step of size d is O(d**3)
            break
    return x * scale


def _reg_lower_gamma(a: float, x: float) -> float:
    """P(a, x), the regularized lower incomplete gamma function (series / continued fraction)."""
    if x <= 0.0:
        return 0.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(500):
            ap += 1.0
            term *= x / ap
            total += term
            if term < total * 1e-15:
                break
        return total * math.exp(log_front)
    # Lentz's continued fraction for Q(a, x).
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < tiny:
            d = tiny
        c = b + an / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return 1.0 - math.exp(log_front) * h


# --------------------------------------------------------------------------- what callers hear

SpokenKind = Literal["less_than_minute", "range", "more_than", "unknown"]


@dataclass(frozen=True, slots=True)
class SpokenWait:
    """A language-neutral announcement; rendering it in words is the prompt layer's job.

    "less_than_minute"             'less than a minute'
    "range"   (lo_min, hi_min)     'about {lo_min} to {hi_min} minutes'
    "more_than" (lo_min)           'more than {lo_min} minutes'
    "unknown"                      nobody can take the call now; no figure is promised
    """

    kind: SpokenKind
    lo_min: int | None = None
    hi_min: int | None = None

    @property
    def upper_s(self) -> float | None:
        """The longest wait the announcement promises, in seconds; None when it promises none."""
        if self.kind == "less_than_minute":
            return 60.0
        if self.kind == "range":
            return 60.0 * self.hi_min
        return None

    @property
    def lower_s(self) -> float:
        """The shortest wait the announcement implies, in seconds (0 for 'less than a minute')."""
        return 60.0 * self.lo_min if self.lo_min is not None else 0.0


SPOKEN_CAP_MIN = 30  # the longest wait callers are ever told: "more than 30 minutes"


def may_run_past(estimate: WaitEstimate, now_s: float, until_s: float) -> bool:
    """Whether a wait starting at now_s may end after until_s (today's closing): its upper end
    passes it, or, with no estimate (nobody on duty: nothing bounds the wait), until_s is nearer
    than the longest wait callers are ever told."""
    upper_s = estimate.hi_s if estimate.known else SPOKEN_CAP_MIN * 60
    return now_s + upper_s > until_s


def spoken_range(estimate: WaitEstimate, *, cap_min: int = SPOKEN_CAP_MIN) -> SpokenWait:
    """Round an estimate's range outward to whole minutes, as callers will hear it.

    - unknown when nobody staffed can serve the queue;
    - 'less than a minute' when the upper end is at most 60 s (and for an immediate answer);
    - 'about X to Y minutes' with X = floor(lo / 60) but at least 1, Y = ceil(hi / 60), X < Y;
    - 'more than N minutes' when Y would exceed cap_min, with N = min(X, cap_min): a floor only.
    """
    if not estimate.known:
        return SpokenWait("unknown")
    hi = estimate.hi_s
    if hi <= 60.0:
        return SpokenWait("less_than_minute")
    lo_min = max(1, int(estimate.lo_s // 60.0))
    hi_min = max(math.ceil(hi / 60.0), lo_min + 1)
    if hi_min > cap_min:
        return SpokenWait("more_than", lo_min=min(lo_min, cap_min))
    return SpokenWait("range", lo_min=lo_min, hi_min=hi_min)


# --------------------------------------------------------------------------- rolling inputs


def _decay(half_life_s: float, dt: float) -> float:
    return 0.5 ** (dt / half_life_s) if dt > 0.0 else 1.0


class _State:
    """Serialization shared by the state records: a flat dict of numbers, and back."""

    __slots__ = ()

    def as_dict(self) -> dict[str, float]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_mapping(cls, data: dict[Any, Any]):
        """Rebuild from a mapping such as a Redis hash (bytes or str keys and values)."""
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            raw = data.get(f.name, data.get(f.name.encode()))
            if raw is None:
                raise KeyError(f.name)
            if isinstance(raw, bytes):
                raw = raw.decode()
            values[f.name] = int(float(raw)) if f.type in ("int", int) else float(raw)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class DecayedMeanState(_State):
    """Exponentially time-decayed sums: weight = sum of w_i, total = sum of w_i * x_i, as of t."""

    t: float
    weight: float = 0.0
    total: float = 0.0


class HandleTimeStats:
    """Rolling average handle time (AHT) over completed calls, with a cold-start prior.

    value = (prior_weight * prior_s + sum w_i h_i) / (prior_weight + sum w_i), where each completed
    handle time h_i (talk plus any wrap-up that blocks the agent) enters with weight 1 that halves
    every half_life_s. The prior's weight does not decay: it is what the estimate falls back to
    after a quiet spell, and it counts for prior_weight calls.
    """

    def __init__(self, prior_s: float = 300.0, prior_weight: float = 5.0, half_life_s: float = 3600.0):
        if prior_s <= 0 or prior_weight <= 0 or half_life_s <= 0:
            raise ValueError("prior_s, prior_weight and half_life_s must be positive")
        self.prior_s = float(prior_s)
        self.prior_weight = float(prior_weight)
        self.half_life_s = float(half_life_s)

    def initial(self, now: float) -> DecayedMeanState:
        return DecayedMeanState(t=float(now))

    def observe(self, state: DecayedMeanState, now: float, handle_s: float) -> DecayedMeanState:
        """Add one completed call's handle time, observed at `now`."""
        if not (handle_s >= 0.0 and math.isfinite(handle_s)):
            return state  # a corrupt duration must not poison the average
        f = _decay(self.half_life_s, now - state.t)
        return DecayedMeanState(max(now, state.t), state.weight * f + 1.0, state.total * f + handle_s)

    def value(self, state: DecayedMeanState, now: float) -> float:
        f = _decay(self.half_life_s, now - state.t)
        w0 = self.prior_weight
        return (w0 * self.prior_s + state.total * f) / (w0 + state.weight * f)


@dataclass(frozen=True, slots=True)
class AbandonmentState(_State):
    """Decayed abandonment count and caller-seconds of waiting as of t, and who is waiting since."""

    t: float
    waiting: int = 0
    abandons: float = 0.0
    exposure_s: float = 0.0


class AbandonmentStats:
    """Abandonment rate theta (hang-ups per waiting caller per second): the censored-data MLE.

    Under exponential patience the maximum-likelihood estimate is the number of abandonments
    divided by the total time callers spent waiting, whether they were then answered, hung up, or
    are still waiting (served callers' waits are censored patience times). Both sums decay with
    half-life half_life_s; the waiting time is accumulated continuously from the number of callers
    in queue, so callers still waiting count at once (this matters at the start of a surge). The
    prior adds prior_exposure_s seconds of waiting at rate 1 / prior_patience_s, not decayed.

    Call `enter` when a caller joins the queue and `leave` when it leaves (answered or abandoned);
    `advance(..., waiting=n)` resynchronizes the count from the authoritative queue length.
    """

    def __init__(
        self,
        prior_patience_s: float = 600.0,
        prior_exposure_s: float = 1800.0,
        half_life_s: float = 1800.0,
    ):
        if prior_patience_s <= 0 or prior_exposure_s <= 0 or half_life_s <= 0:
            raise ValueError("prior_patience_s, prior_exposure_s and half_life_s must be positive")
        self.prior_patience_s = float(prior_patience_s)
        self.prior_exposure_s = float(prior_exposure_s)
        self.half_life_s = float(half_life_s)
        self._k = math.log(2.0) / self.half_life_s

    def initial(self, now: float, waiting: int = 0) -> AbandonmentState:
        return AbandonmentState(t=float(now), waiting=max(0, int(waiting)))

    def advance(self, state: AbandonmentState, now: float, waiting: int | None = None) -> AbandonmentState:
        """Decay to `now`, adding the waiting time of the callers in queue since state.t."""
        dt = now - state.t
        if dt > 0.0:
            f = math.exp(-self._k * dt)
            abandons = state.abandons * f
            exposure = state.exposure_s * f + state.waiting * (1.0 - f) / self._k
            state = AbandonmentState(float(now), state.waiting, abandons, exposure)
        if waiting is not None and waiting != state.waiting:
            state = AbandonmentState(state.t, max(0, int(waiting)), state.abandons, state.exposure_s)
        return state

    def enter(self, state: AbandonmentState, now: float) -> AbandonmentState:
        state = self.advance(state, now)
        return AbandonmentState(state.t, state.waiting + 1, state.abandons, state.exposure_s)

    def leave(self, state: AbandonmentState, now: float, *, abandoned: bool) -> AbandonmentState:
        state = self.advance(state, now)
        return AbandonmentState(
            state.t, max(0, state.waiting - 1), state.abandons + (1.0 if abandoned else 0.0), state.exposure_s
        )

    def rate(self, state: AbandonmentState, now: float) -> float:
        state = self.advance(state, now)
        prior_abandons = self.prior_exposure_s / self.prior_patience_s
        return (prior_abandons + state.abandons) / (self.prior_exposure_s + state.exposure_s)
