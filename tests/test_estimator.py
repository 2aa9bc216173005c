"""The wait-time estimator (ivr.queues.estimator): QL_m and its range, spoken rounding, and the
rolling handle-time and abandonment statistics. Pure functions: no Redis, no app, no sleeps."""

from __future__ import annotations

import math
import random

import pytest

from ivr.queues.estimator import (
    AbandonmentState,
    AbandonmentStats,
    DecayedMeanState,
    HandleTimeStats,
    QueueSnapshot,
    SpokenWait,
    WaitEstimate,
    estimate_wait,
    gamma_quantile,
    hypoexp_moments,
    spoken_range,
)


def snap(ahead, staffed=20, busy=None, aht=300.0, theta=0.0) -> QueueSnapshot:
    return QueueSnapshot(ahead, staffed, staffed if busy is None else busy, aht, theta)


def direct_moments(ahead: int, rate: float, theta: float) -> tuple[float, float]:
    terms = [1.0 / (rate + j * theta) for j in range(ahead + 1)]
    return sum(terms), sum(t * t for t in terms)


# --------------------------------------------------------------------------- QL_m


def test_ql_m_hand_computed():
    # 2 agents, AHT 100 s: s*mu = 0.02/s; theta = 0.01/s; 2 callers ahead: stages 0.02, 0.03, 0.04
    est = estimate_wait(QueueSnapshot(2, 2, 2, 100.0, 0.01))
    assert est.status == "wait"
    assert est.point_s == pytest.approx(50 + 100 / 3 + 25)
    assert est.sd_s == pytest.approx(math.sqrt(2500 + 10000 / 9 + 625))


def test_no_abandonment_is_plain_queue_length():
    for n in (0, 1, 9, 47, 48, 500):
        est = estimate_wait(snap(n, theta=0.0))
        assert est.point_s == pytest.approx((n + 1) * 300 / 20)
        assert est.sd_s == pytest.approx(math.sqrt(n + 1) * 15)


@pytest.mark.parametrize(
    ("n", "lo", "hi"),
    # reference sec. 4.2 (Whitt 1999): s = 20, AHT 300 s, Gamma(n+1, 15 s)
    [(4, 36.5, 119.9), (9, 93.3, 213.1), (19, 217.9, 388.5), (39, 482.1, 724.3)],
)
def test_range_matches_the_gamma_conditional_delay(n, lo, hi):
    est = estimate_wait(snap(n))
    assert est.lo_s == pytest.approx(lo, abs=0.1)
    assert est.hi_s == pytest.approx(hi, abs=0.1)


def test_head_of_queue_range_is_exponential():
    est = estimate_wait(snap(0, staffed=4, aht=200.0, theta=0.002))
    assert est.point_s == pytest.approx(50.0)
    assert est.lo_s == pytest.approx(-math.log(0.9) * 50.0)
    assert est.hi_s == pytest.approx(-math.log(0.1) * 50.0)


@pytest.mark.parametrize("n", [10, 47, 48, 49, 120, 1000, 20000])
@pytest.mark.parametrize("theta", [1 / 600, 1 / 30, 1e-7])
def test_closed_form_matches_the_sum(n, theta):
    mean, var = hypoexp_moments(n, 20 / 300, theta)
    ref_mean, ref_var = direct_moments(n, 20 / 300, theta)
    assert mean == pytest.approx(ref_mean, rel=1e-9)
    assert var == pytest.approx(ref_var, rel=1e-8)


def test_abandonment_ahead_shortens_the_wait():
    n = 30
    with_ab = estimate_wait(snap(n, theta=1 / 600))
    without = estimate_wait(snap(n))
    assert with_ab.point_s < without.point_s
    # and it is the sum over stages: 20/300 + j/600
    assert with_ab.point_s == pytest.approx(direct_moments(n, 20 / 300, 1 / 600)[0])


def test_monotone_in_callers_ahead_and_handle_time():
    prev = None
    for n in range(0, 400):
        est = estimate_wait(snap(n, theta=1 / 600))
        if prev is not None:
            assert est.point_s > prev.point_s
            assert est.lo_s > prev.lo_s
            assert est.hi_s > prev.hi_s
        assert est.lo_s < est.point_s < est.hi_s
        prev = est
    assert estimate_wait(snap(10, aht=400.0)).point_s > estimate_wait(snap(10, aht=300.0)).point_s
    assert estimate_wait(snap(10, theta=0.01)).point_s < estimate_wait(snap(10, theta=0.001)).point_s


def test_huge_queue_is_finite_and_fast_path():
    est = estimate_wait(snap(10**6, theta=1 / 600))
    assert math.isfinite(est.point_s) and est.lo_s < est.point_s < est.hi_s
    # with abandonment the mean grows like log(n) / theta, not linearly
    assert est.point_s < 600 * math.log(10**6)


def test_nobody_staffed_is_unknown():
    est = estimate_wait(QueueSnapshot(3, 0, 0, 300.0, 0.001))
    assert est.status == "no_agents" and not est.known
    assert math.isinf(est.point_s) and math.isinf(est.hi_s)
    assert spoken_range(est) == SpokenWait("unknown")
    assert spoken_range(est).upper_s is None


def test_idle_agents_answer_at_once():
    # 5 staffed, 3 busy: 2 idle; the first two callers (ahead 0 and 1) go straight through
    for ahead in (0, 1):
        est = estimate_wait(QueueSnapshot(ahead, 5, 3, 300.0, 0.001))
        assert est == WaitEstimate("immediate", 0.0, 0.0, 0.0, 0.0)
        assert est.known
        assert spoken_range(est).kind == "less_than_minute"
    # the third waits as if it were at the head with every agent busy
    assert estimate_wait(QueueSnapshot(2, 5, 3, 300.0, 0.001)) == estimate_wait(QueueSnapshot(0, 5, 5, 300.0, 0.001))


def test_inconsistent_counters_are_clamped():
    assert estimate_wait(QueueSnapshot(4, 5, 9, 300.0, 0.0)) == estimate_wait(QueueSnapshot(4, 5, 5, 300.0, 0.0))
    assert estimate_wait(QueueSnapshot(-3, 5, 5, 300.0, 0.0)) == estimate_wait(QueueSnapshot(0, 5, 5, 300.0, 0.0))
    assert estimate_wait(QueueSnapshot(0, 5, -1, 300.0, 0.0)).status == "immediate"


@pytest.mark.parametrize(("aht", "theta"), [(0.0, 0.0), (-5.0, 0.0), (math.nan, 0.0), (300.0, -0.1), (300.0, math.inf)])
def test_invalid_rates_raise(aht, theta):
    with pytest.raises(ValueError):
        estimate_wait(QueueSnapshot(1, 2, 2, aht, theta))


def test_custom_quantile_levels_widen_the_range():
    narrow = estimate_wait(snap(9), lo_q=0.25, hi_q=0.75)
    wide = estimate_wait(snap(9), lo_q=0.05, hi_q=0.95)
    assert wide.lo_s < narrow.lo_s < narrow.hi_s < wide.hi_s


# --------------------------------------------------------------------------- gamma quantiles


@pytest.mark.parametrize(
    ("df", "q10", "q90"),
    # chi-square tables: chi2(df) = Gamma(df/2, scale 2)
    [(1, 0.01579, 2.70554), (2, 0.21072, 4.60517), (5, 1.61031, 9.23636), (10, 4.86518, 15.98718),
     (20, 12.44261, 28.41198), (50, 37.68865, 63.16712), (100, 82.35814, 118.49800)],
)  # fmt: skip
def test_gamma_quantile_matches_chi_square_tables(df, q10, q90):
    assert gamma_quantile(0.1, df / 2, 2.0) == pytest.approx(q10, rel=2.5e-4)
    assert gamma_quantile(0.9, df / 2, 2.0) == pytest.approx(q90, rel=2.5e-4)
    # the tables give 5-6 significant digits
    assert gamma_quantile(0.1, df / 2, 2.0, exact=True) == pytest.approx(q10, rel=1e-4)
    assert gamma_quantile(0.9, df / 2, 2.0, exact=True) == pytest.approx(q90, rel=1e-4)


def erlang_cdf(k: int, x: float) -> float:
    """P(Gamma(k, 1) <= x) for integer k: 1 - exp(-x) * sum_{i<k} x^i / i!"""
    term = total = 1.0
    for i in range(1, k):
        term *= x / i
        total += term
    return 1.0 - math.exp(-x) * total


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 13, 21, 34, 60])
def test_gamma_quantile_inverts_the_erlang_cdf(k):
    for p in (0.01, 0.1, 0.3, 0.5, 0.8, 0.9, 0.99):
        assert erlang_cdf(k, gamma_quantile(p, k, exact=True)) == pytest.approx(p, abs=1e-9)
        assert erlang_cdf(k, gamma_quantile(p, k)) == pytest.approx(p, abs=2e-3)


def test_gamma_quantile_fast_path_is_close_to_exact():
    for k in [0.5 + 0.37 * i for i in range(80)] + [100.0, 1000.0]:
        prev = 0.0
        for p in (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99):
            q = gamma_quantile(p, k)
            assert q == pytest.approx(gamma_quantile(p, k, exact=True), rel=2.5e-4)
            assert q > prev
            prev = q


def test_gamma_quantile_rejects_bad_arguments():
    for p in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            gamma_quantile(p, 2.0)
    with pytest.raises(ValueError):
        gamma_quantile(0.5, 0.1)


# --------------------------------------------------------------------------- spoken


def est(lo, hi) -> WaitEstimate:
    return WaitEstimate("wait", (lo + hi) / 2, lo, hi, 1.0)


@pytest.mark.parametrize(
    ("lo", "hi", "spoken"),
    [
        (5, 45, SpokenWait("less_than_minute")),
        (20, 60, SpokenWait("less_than_minute")),
        (30, 61, SpokenWait("range", 1, 2)),  # lower end at least 1 minute
        (93, 213, SpokenWait("range", 1, 4)),
        (250, 370, SpokenWait("range", 4, 7)),
        (240, 360, SpokenWait("range", 4, 6)),  # whole minutes stay as they are
        (125, 130, SpokenWait("range", 2, 3)),  # X < Y even for a narrow range
        (1500, 1800, SpokenWait("range", 25, 30)),
        (1500, 1801, SpokenWait("more_than", 25)),  # above the cap: a floor only
        (2400, 3000, SpokenWait("more_than", 30)),
    ],
)
def test_spoken_range(lo, hi, spoken):
    assert spoken_range(est(lo, hi)) == spoken


def test_spoken_bounds_in_seconds():
    assert SpokenWait("less_than_minute").upper_s == 60.0
    assert SpokenWait("less_than_minute").lower_s == 0.0
    assert SpokenWait("range", 4, 7).upper_s == 420.0
    assert SpokenWait("range", 4, 7).lower_s == 240.0
    assert SpokenWait("more_than", 30).upper_s is None
    assert SpokenWait("more_than", 30).lower_s == 1800.0


def test_spoken_cap_is_configurable():
    assert spoken_range(est(500, 700), cap_min=10) == SpokenWait("more_than", 8)
    assert spoken_range(est(500, 700), cap_min=12) == SpokenWait("range", 8, 12)


def test_spoken_range_contains_the_raw_range_above_a_minute():
    for n in range(1, 150):
        e = estimate_wait(snap(n, staffed=6, theta=1 / 600))
        s = spoken_range(e)
        if s.kind == "range":
            assert s.upper_s >= e.hi_s
            assert s.lower_s <= max(e.lo_s, 60.0)


# --------------------------------------------------------------------------- rolling statistics


def test_handle_time_cold_start_is_the_prior():
    stats = HandleTimeStats(prior_s=240.0, prior_weight=4.0, half_life_s=3600.0)
    state = stats.initial(1000.0)
    assert stats.value(state, 1000.0) == 240.0
    assert stats.value(state, 10**6) == 240.0


def test_handle_time_weighted_mean_and_decay():
    stats = HandleTimeStats(prior_s=300.0, prior_weight=1.0, half_life_s=600.0)
    state = stats.initial(0.0)
    state = stats.observe(state, 0.0, 100.0)
    assert stats.value(state, 0.0) == pytest.approx((300 + 100) / 2)
    # after one half-life the sample weighs 0.5 against the prior's 1
    assert stats.value(state, 600.0) == pytest.approx((300 + 0.5 * 100) / 1.5)
    state = stats.observe(state, 600.0, 400.0)
    assert stats.value(state, 600.0) == pytest.approx((300 + 0.5 * 100 + 400) / 2.5)


def test_handle_time_converges_to_the_data():
    stats = HandleTimeStats(prior_s=600.0, prior_weight=5.0, half_life_s=3600.0)
    state = stats.initial(0.0)
    rng = random.Random(7)
    now = 0.0
    for _ in range(3000):
        now += 15.0
        state = stats.observe(state, now, rng.expovariate(1 / 300))
    assert stats.value(state, now) == pytest.approx(300.0, rel=0.1)


def test_handle_time_ignores_bad_samples_and_clock_skew():
    stats = HandleTimeStats(prior_s=300.0, prior_weight=1.0, half_life_s=600.0)
    state = stats.observe(stats.initial(100.0), 100.0, 200.0)
    assert stats.observe(state, 100.0, math.nan) == state
    assert stats.observe(state, 100.0, -1.0) == state
    earlier = stats.observe(state, 50.0, 200.0)  # a worker with a clock behind: no growth, no crash
    assert earlier.t == 100.0 and earlier.weight == 2.0
    assert stats.value(earlier, 50.0) == pytest.approx((300 + 400) / 3)


def test_state_round_trips_through_a_redis_hash():
    state = DecayedMeanState(12.5, 3.25, 900.0)
    as_redis = {k.encode(): str(v).encode() for k, v in state.as_dict().items()}
    assert DecayedMeanState.from_mapping(as_redis) == state
    ab = AbandonmentState(100.0, 7, 1.5, 4200.0)
    assert AbandonmentState.from_mapping({k: str(v) for k, v in ab.as_dict().items()}) == ab
    assert isinstance(AbandonmentState.from_mapping({k: str(v) for k, v in ab.as_dict().items()}).waiting, int)
    with pytest.raises(KeyError):
        AbandonmentState.from_mapping({"t": "1"})


def test_abandonment_cold_start_is_the_prior():
    stats = AbandonmentStats(prior_patience_s=400.0, prior_exposure_s=1200.0, half_life_s=1800.0)
    state = stats.initial(0.0)
    assert stats.rate(state, 0.0) == pytest.approx(1 / 400)
    assert stats.rate(state, 10**5) == pytest.approx(1 / 400)


def test_abandonment_counts_waiting_time_of_everyone_in_queue():
    stats = AbandonmentStats(prior_patience_s=600.0, prior_exposure_s=600.0, half_life_s=1e12)
    s = stats.initial(0.0)
    s = stats.enter(s, 0.0)
    s = stats.enter(s, 10.0)
    s = stats.enter(s, 20.0)
    s = stats.leave(s, 100.0, abandoned=True)  # 3 waiting from 20 to 100
    s = stats.leave(s, 160.0, abandoned=False)  # answered: censored, its wait still counts
    assert s.waiting == 1
    exposure = 10 + 2 * 10 + 3 * 80 + 2 * 60
    assert s.exposure_s == pytest.approx(exposure)
    assert s.abandons == pytest.approx(1)
    # a caller still waiting counts up to "now", without any event
    assert stats.rate(s, 200.0) == pytest.approx((1 + 1) / (600 + exposure + 40))
    assert stats.advance(s, 200.0).waiting == 1  # rate() did not change the state
    assert s.t == 160.0


def test_abandonment_decay_and_resync():
    stats = AbandonmentStats(prior_patience_s=600.0, prior_exposure_s=600.0, half_life_s=600.0)
    s = stats.initial(0.0, waiting=4)
    s = stats.advance(s, 600.0)
    k = math.log(2) / 600
    assert s.exposure_s == pytest.approx(4 * 0.5 / k)
    s = stats.leave(s, 600.0, abandoned=True)
    s = stats.advance(s, 1200.0, waiting=0)  # the queue says nobody is left
    assert s.abandons == pytest.approx(0.5)
    assert s.waiting == 0
    s = stats.leave(s, 1300.0, abandoned=False)  # a lost enter: never below zero
    assert s.waiting == 0


def test_abandonment_recovers_exponential_patience():
    """The censored MLE on seeded synthetic callers: offered waits of 0-20 min, patience mean 500 s."""
    stats = AbandonmentStats(prior_patience_s=100.0, prior_exposure_s=600.0, half_life_s=1e12)
    rng = random.Random(3)
    events = []
    for i in range(4000):
        arrive = i * 20.0
        offered = rng.uniform(0, 1200)
        patience = rng.expovariate(1 / 500)
        events.append((arrive, "enter", False))
        events.append((arrive + min(offered, patience), "leave", patience < offered))
    events.sort(key=lambda e: (e[0], e[1] == "leave"))
    s = stats.initial(0.0)
    for t, kind, abandoned in events:
        s = stats.enter(s, t) if kind == "enter" else stats.leave(s, t, abandoned=abandoned)
    assert s.waiting == 0
    assert 1 / stats.rate(s, events[-1][0]) == pytest.approx(500, rel=0.06)


def test_stats_reject_bad_configuration():
    with pytest.raises(ValueError):
        HandleTimeStats(prior_s=0)
    with pytest.raises(ValueError):
        AbandonmentStats(half_life_s=-1)
