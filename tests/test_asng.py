"""Tests for compressor.search.asng (ASNG-NAS distribution update, docs/ALGORITHMS.md section 2).

The hand-worked tests recompute every expected number from the formulas with plain Python
floats (``math`` only) and also compare with the values worked out by hand (in the comments).
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from compressor.search.asng import CategoricalASNG, from_onehot, ranking_utility, to_onehot

SQ = math.sqrt


# --------------------------------------------------------------------------- helpers
def _close(actual, expected, tol=1e-12):
    a = np.asarray(actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    assert a.shape == e.shape, (a.shape, e.shape)
    assert np.allclose(a, e, rtol=0, atol=tol), (a.tolist(), e.tolist())


def _theta_rows(opt):
    return [row.tolist() for row in opt.theta_list()]


def _check_valid(opt):
    th = opt.theta
    tmin = opt.theta_min
    for i, k in enumerate(opt.categories):
        row = th[i, :k]
        assert abs(row.sum() - 1.0) < 1e-12
        assert np.all(row >= tmin[i] - 1e-12), (row, tmin[i])
        assert np.all(th[i, k:] == 0.0)


# --------------------------------------------------------------------------- hand-worked
def test_hand_worked_two_steps_categories_2_3():
    # categories [2, 3]: N = (2-1) + (3-1) = 3, D = 2.
    # theta_min: decision 0 (K=2): 1/(2*1) = 1/2;  decision 1 (K=3): 1/(2*2) = 1/4.
    # Start: theta0 = [1/2, 1/2], theta1 = [1/3, 1/3, 1/3], s = 0, gamma = 0, Delta = 1.
    opt = CategoricalASNG([2, 3], rng=0)
    assert (opt.N, opt.D) == (3, 2)
    _close(opt.theta_min, [0.5, 0.25])
    _close(opt.theta, [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    assert opt.step_size == 1.0 and opt.Delta == 1.0 and opt.gamma == 0.0

    # ---------------- step 1: x1 = (0, 0) loss 1.0, x2 = (1, 2) loss 2.0 -> u = (+1, -1)
    # delta = 1/1 = 1, beta = 1/sqrt(3) = 0.5773502692
    # g = ((e(x1) - th) - (e(x2) - th))/2 = (e(x1) - e(x2))/2
    #   g0 = ([1,0] - [0,1])/2 = [1/2, -1/2];  g1 = ([1,0,0] - [0,0,1])/2 = [1/2, 0, -1/2]
    delta = 1.0 / 1.0
    beta = delta / SQ(3)
    g0 = [0.5, -0.5]
    g1 = [0.5, 0.0, -0.5]
    # v0 = g0[0]/sqrt(1/2) + sqrt(1/2)*g0[0]/(1/2 + sqrt(1/2)) = sqrt(1/2) + (1 - sqrt(1/2)) = 1
    v0 = g0[0] / SQ(0.5) + SQ(0.5) * g0[0] / (0.5 + SQ(0.5))
    # v1: a = [1/3, 1/3], th_K = 1/3, sum g1[:2] = 1/2; c = (1/2)/(1/3 + sqrt(1/3)) = 0.5490381
    #     v1 = [ (1/2)*sqrt(3) + sqrt(1/3)*c, 0 + sqrt(1/3)*c ] = [1.1830127, 0.3169873]
    c = (g1[0] + g1[1]) / (1 / 3 + SQ(1 / 3))
    v1 = [g1[0] / SQ(1 / 3) + SQ(1 / 3) * c, g1[1] / SQ(1 / 3) + SQ(1 / 3) * c]
    v = [v0] + v1
    # |g|_F^2 = 1 + 1.1830127^2 + 0.3169873^2 = 2.5  -> |g|_F = 1.5811388
    gn = SQ(sum(x * x for x in v))
    _close([v0, *v1, gn * gn], [1.0, 1.1830127018922194, 0.3169872981077807, 2.5], 1e-9)
    # theta + delta*g/|g|_F:  step = g * 0.6324555
    #   row0 = [0.8162278, 0.1837722] -> clip at 1/2 -> [0.8162278, 0.5], S = 1.3162278
    #          S - 2*(1/2) = S - 1, so the shift removes all excess: [1/2, 1/2]  (margin pins it)
    #   row1 = [0.6495611, 0.3333333, 0.0171056] -> clip at 1/4 -> [0.6495611, 0.3333333, 0.25]
    #          S = 1.2328944, S - 3/4 = 0.4828944, S - 1 = 0.2328944
    #          -> [0.6495611 - 0.2328944*0.3995611/0.4828944, 0.3333333 - 0.2328944*0.0833333/0.4828944, 0.25]
    #          =  [0.4568574, 0.2931426, 0.25]
    def margin(row, tmin):
        row = [max(x, tmin) for x in row]
        tot = sum(row)
        den = tot - len(row) * tmin
        if den > 0:
            row = [x - (tot - 1.0) * (x - tmin) / den for x in row]
        tot = sum(row)
        return [x / tot for x in row]

    raw0 = [0.5 + delta * g / gn for g in g0]
    raw1 = [1 / 3 + delta * g / gn for g in g1]
    assert raw0[1] < 0.5 and raw1[2] < 0.25  # the margin is active in both rows
    th0 = margin(raw0, 0.5)
    th1 = margin(raw1, 0.25)
    _close(th0, [0.5, 0.5])
    _close(th1, [0.4568573751874506, 0.2931426248125494, 0.25], 1e-9)
    # s = 0 + sqrt(beta(2-beta)) * v/|g|_F ; gamma = beta(2-beta) = 0.8213672
    # |s|^2 = gamma on the first step; Delta = exp(beta*(gamma - gamma/1.5)) = exp(0.1580719) = 1.1712507
    cs = SQ(beta * (2 - beta))
    s = [cs * x / gn for x in v]
    gamma = beta * (2 - beta)
    Delta = 1.0 * math.exp(beta * (gamma - sum(x * x for x in s) / 1.5))
    _close(s, [0.5731900923937602, 0.6780911599005931, 0.18169397869004722], 1e-9)
    _close([gamma, Delta], [0.8213672050459183, 1.171250746955285], 1e-9)

    assert opt.update(np.array([[0, 0], [1, 2]]), [1.0, 2.0]) is True
    _close(_theta_rows(opt)[0], th0)
    _close(_theta_rows(opt)[1], th1)
    _close(opt.s, s)
    _close([opt.gamma, opt.Delta, opt.step_size], [gamma, Delta, 1.0 / Delta])

    # ---------------- step 2: x1 = (1, 2) loss 3.0, x2 = (0, 1) loss 1.0 -> u = (-1, +1)
    # delta = 1/1.1712507 = 0.8537881, beta = delta/sqrt(3) = 0.4929348
    # g0 = ([1,0] - [0,1])/2 = [1/2, -1/2];  g1 = ([0,1,0] - [0,0,1])/2 = [0, 1/2, -1/2]
    delta = 1.0 / Delta
    beta = delta / SQ(3)
    _close([delta, beta], [0.8537881428033591, 0.49293481407843004], 1e-9)
    g0 = [0.5, -0.5]
    g1 = [0.0, 0.5, -0.5]
    # v0 = 1 again (theta0 is still [1/2, 1/2])
    v0 = g0[0] / SQ(th0[0]) + SQ(th0[0]) * g0[0] / (th0[1] + SQ(th0[1]))
    # v1: a = [0.4568574, 0.2931426], th_K = 1/4, sum g1[:2] = 1/2, c = (1/2)/(1/4 + 1/2) = 2/3
    #     v1 = [0 + sqrt(0.4568574)*2/3, 0.5/sqrt(0.2931426) + sqrt(0.2931426)*2/3]
    #        = [0.6759122*2/3, 0.9234864 + 0.3609510] = [0.4506082, 1.2844374]
    c = (g1[0] + g1[1]) / (th1[2] + SQ(th1[2]))
    assert abs(c - 2 / 3) < 1e-12
    v1 = [g1[j] / SQ(th1[j]) + SQ(th1[j]) * c for j in range(2)]
    v = [v0] + v1
    gn = SQ(sum(x * x for x in v))
    # |g|_F^2 = 1 + 0.4506082^2 + 1.2844374^2 = 2.8528272 -> |g|_F = 1.6890314
    _close([*v1, gn], [0.4506081693728306, 1.2844374116023387, 1.6890314344704331], 1e-9)
    # theta + delta*g/|g|_F, delta/|g|_F = 0.5054898:
    #   row0 = [0.7527449, 0.2472551] -> clip -> pinned again at [1/2, 1/2]
    #   row1 = [0.4568574, 0.5458875, -0.0027449] -> clip third to 1/4: S = 1.2527449,
    #          S - 3/4 = 0.5027449, S - 1 = 0.2527449
    #          -> [0.4568574 - 0.2527449*0.2068574/0.5027449, 0.5458875 - 0.2527449*0.2958875/0.5027449, 0.25]
    #          =  [0.3528640, 0.3971360, 0.25]
    raw0 = [th0[j] + delta * g0[j] / gn for j in range(2)]
    raw1 = [th1[j] + delta * g1[j] / gn for j in range(3)]
    assert raw1[2] < 0.0  # the step overshoots below zero; the margin repairs it
    th0 = margin(raw0, 0.5)
    th1 = margin(raw1, 0.25)
    _close(th0, [0.5, 0.5])
    _close(th1, [0.3528639860524465, 0.3971360139475535, 0.25], 1e-9)
    # s = (1-beta)*s_prev + sqrt(beta(2-beta))*v/|g|_F = [0.8009418, 0.5737804, 0.7475753]
    # gamma = (1-beta)^2*0.8213672 + beta(2-beta) = 0.2057107 + 0.7483601 = 0.9540708
    # Delta = 1.1712507 * exp(beta*(0.9540708 - 1.5296005/1.5)) = 1.1339473  (Delta falls)
    cs = SQ(beta * (2 - beta))
    s = [(1 - beta) * sp + cs * x / gn for sp, x in zip(s, v)]
    gamma = (1 - beta) ** 2 * gamma + beta * (2 - beta)
    Delta = Delta * math.exp(beta * (gamma - sum(x * x for x in s) / 1.5))
    _close(s, [0.8009417609876972, 0.5737804261843555, 0.7475752748846164], 1e-9)
    _close([gamma, Delta], [0.9540708105666322, 1.133947256532085], 1e-9)

    assert opt.update(np.array([[1, 2], [0, 1]]), [3.0, 1.0]) is True
    _close(_theta_rows(opt)[0], th0)
    _close(_theta_rows(opt)[1], th1)
    _close(opt.s, s)
    _close([opt.gamma, opt.Delta, opt.step_size], [gamma, Delta, 1.0 / Delta])
    assert opt.num_updates == 2
    _close(opt.argmax(), [0, 1], 0)
    _close(opt.convergence(), (0.5 + th1[1]) / 2)


def test_hand_worked_margin_inactive_with_constant_decision():
    # categories [3, 1, 4], delta_init = 0.2: N = 2 + 0 + 3 = 5, D = 2 (the K=1 decision is
    # constant). theta_min = 1/(2*2) = 1/4 for K=3, 1/(2*3) = 1/6 for K=4.
    # x1 = (2, 0, 1) loss 0.3, x2 = (0, 0, 3) loss 0.1 -> u = (-1, +1); one-hot samples given.
    opt = CategoricalASNG([3, 1, 4], delta_init=0.2, rng=1)
    assert (opt.N, opt.D) == (5, 2)
    # delta = 0.2, beta = 0.2/sqrt(5) = 0.0894427
    delta = 0.2
    beta = delta / SQ(5)
    # g = (e(x2) - e(x1))/2: g0 = [1/2, 0, -1/2], g1 = [0], g2 = [0, -1/2, 0, 1/2]
    g0 = [0.5, 0.0, -0.5]
    g2 = [0.0, -0.5, 0.0, 0.5]
    # v0 = [1.1830127, 0.3169873] (as in the [2,3] case); v2: a = [1/4]*3, th_K = 1/4,
    #   sum g2[:3] = -1/2, c = (-1/2)/(1/4 + 1/2) = -2/3
    #   v2 = [0 + (1/2)(-2/3), -1/2/(1/2) + (1/2)(-2/3), 0 + (1/2)(-2/3)] = [-1/3, -4/3, -1/3]
    c0 = (g0[0] + g0[1]) / (1 / 3 + SQ(1 / 3))
    v0 = [g0[j] / SQ(1 / 3) + SQ(1 / 3) * c0 for j in range(2)]
    c2 = sum(g2[:3]) / (0.25 + SQ(0.25))
    v2 = [g2[j] / SQ(0.25) + SQ(0.25) * c2 for j in range(3)]
    _close(v2, [-1 / 3, -4 / 3, -1 / 3])
    v = v0 + v2
    # |g|_F^2 = 2.5 - 1 + 1/9 + 16/9 + 1/9 = 1.5 + 2 = 3.5
    gn = SQ(sum(x * x for x in v))
    _close(gn * gn, 3.5)
    # delta/|g|_F = 0.2/1.8708287 = 0.1069045; no entry falls below the margin:
    #   row0 = [1/3 + 0.0534522, 1/3, 1/3 - 0.0534522] = [0.3867856, 0.3333333, 0.2798811] (> 1/4)
    #   row2 = [1/4, 1/4 - 0.0534522, 1/4, 1/4 + 0.0534522] = [0.25, 0.1965478, 0.25, 0.3034522] (> 1/6)
    th0 = [1 / 3 + delta * g / gn for g in g0]
    th2 = [0.25 + delta * g / gn for g in g2]
    assert min(th0) > 0.25 and min(th2) > 1 / 6
    _close(th0, [0.38678558171581817, 1 / 3, 0.27988108495084846], 1e-9)
    _close(th2, [0.25, 0.19654775161751514, 0.25, 0.30345224838248486], 1e-9)
    # s = sqrt(beta(2-beta)) v/|g|_F, gamma = beta(2-beta) = 0.1708854,
    # Delta = exp(beta*gamma*(1 - 1/1.5)) = exp(0.0050948) = 1.0051078
    cs = SQ(beta * (2 - beta))
    s = [cs * x / gn for x in v]
    gamma = beta * (2 - beta)
    Delta = math.exp(beta * (gamma - sum(x * x for x in s) / 1.5))
    _close([gamma, Delta], [0.17088543819998317, 1.0051078200774703], 1e-9)

    samples = to_onehot(np.array([[2, 0, 1], [0, 0, 3]]), [3, 1, 4])
    assert samples.shape == (2, 3, 4)
    assert opt.update(samples, [0.3, 0.1]) is True
    rows = _theta_rows(opt)
    _close(rows[0], th0)
    _close(rows[1], [1.0])
    _close(rows[2], th2)
    _close(opt.theta[0, 3], 0.0, 0)
    _close(opt.theta[1, 1:], [0.0, 0.0, 0.0], 0)
    _close(opt.s, s)
    _close([opt.gamma, opt.Delta], [gamma, Delta])


# --------------------------------------------------------------------------- ties, skips, caps
def test_tie_changes_nothing():
    opt = CategoricalASNG([2, 3, 4], rng=3)
    for _ in range(5):
        x = opt.sample(2)
        opt.update(x, np.random.default_rng(0).random(2))
    twin = CategoricalASNG.from_state_dict(copy.deepcopy(opt.state_dict()))
    before = json.dumps(opt.state_dict())
    x = np.array([[0, 1, 2], [1, 2, 3]])
    assert opt.update(x, [0.7, 0.7]) is False
    assert json.dumps(opt.state_dict()) == before
    # also for lambda > 2 when all losses are equal
    assert opt.update(np.array([[0, 1, 2], [1, 2, 3], [1, 0, 0], [0, 0, 0]]), [2.0] * 4) is False
    assert json.dumps(opt.state_dict()) == before
    # the rng was not touched either: the next draws match a twin that never saw the ties
    np.testing.assert_array_equal(opt.sample(5), twin.sample(5))


def test_identical_samples_skip():
    # Different losses but the same architecture twice: g = 0, the step is undefined -> skip.
    opt = CategoricalASNG([3, 3], rng=0)
    before = opt.state_dict()
    assert opt.update(np.array([[1, 2], [1, 2]]), [0.1, 0.2]) is False
    assert opt.state_dict() == before


def test_delta_max_honoured():
    # Step 1 of the hand-worked case would take Delta to 1.1712507; a cap of 1.05 must hold.
    opt = CategoricalASNG([2, 3], delta_max=1.05, rng=0)
    opt.update(np.array([[0, 0], [1, 2]]), [1.0, 2.0])
    assert opt.Delta == 1.05
    assert opt.step_size == pytest.approx(1 / 1.05, abs=1e-15)
    uncapped = CategoricalASNG([2, 3], rng=0)
    uncapped.update(np.array([[0, 0], [1, 2]]), [1.0, 2.0])
    assert uncapped.Delta == pytest.approx(1.171250746955285, abs=1e-12)
    # noisy losses make Delta grow without bound unless capped
    rng = np.random.default_rng(5)
    capped = CategoricalASNG([4] * 6, delta_max=3.0, rng=1)
    free = CategoricalASNG([4] * 6, rng=1)
    for _ in range(300):
        for opt in (capped, free):
            opt.update(opt.sample(2), rng.random(2))
            assert opt.Delta <= opt.delta_max
    assert capped.Delta == 3.0 and capped.step_size == pytest.approx(1 / 3)
    assert free.Delta > 3.0


def test_delta_shrinks_under_consistent_signal():
    # Repeating the same ranking accumulates s (|s|^2 > alpha*gamma) and Delta falls below 1.
    opt = CategoricalASNG([4] * 10, rng=0)
    good, bad = np.zeros(10, int), np.full(10, 3)
    seen = []
    for _ in range(5):
        opt.update(np.stack([good, bad]), [0.0, 1.0])
        seen.append(opt.Delta)
    assert seen[0] > 1.0 and min(seen) < 1.0


# --------------------------------------------------------------------------- ranking
def test_ranking_utility():
    np.testing.assert_array_equal(ranking_utility([1.0, 2.0]), [1, -1])
    np.testing.assert_array_equal(ranking_utility([2.0, 1.0]), [-1, 1])
    np.testing.assert_array_equal(ranking_utility([1.5, 1.5]), [0, 0])
    # lambda = 4, mu = 1: best +1, worst -1
    np.testing.assert_array_equal(ranking_utility([3.0, 1.0, 2.0, 4.0]), [0, 1, 0, -1])
    # ties share the mean weight of the ranks they occupy
    np.testing.assert_allclose(ranking_utility([1.0, 1.0, 2.0, 2.0]), [0.5, 0.5, -0.5, -0.5])
    np.testing.assert_allclose(ranking_utility([1.0, 1.0, 1.0, 2.0]), [1 / 3, 1 / 3, 1 / 3, -1])
    # lambda = 8, mu = 2
    u = ranking_utility([8, 7, 6, 5, 4, 3, 2, 1])
    np.testing.assert_array_equal(u, [-1, -1, 0, 0, 0, 0, 1, 1])
    # NaN is worst
    np.testing.assert_array_equal(ranking_utility([float("nan"), 1.0]), [-1, 1])
    with pytest.raises(ValueError):
        ranking_utility([1.0])


def test_lambda_four_update_equals_pair_update():
    # With losses (a<b<c<d) only the best (+1) and worst (-1) count; the g of lambda=4 is half
    # the g of the pair, and the update is invariant to the scale of g.
    xs = np.array([[0, 1, 2], [1, 1, 1], [2, 0, 0], [1, 2, 3]])
    a = CategoricalASNG([3, 3, 4], rng=0)
    b = CategoricalASNG([3, 3, 4], rng=0)
    a.update(xs, [0.1, 0.5, 0.6, 0.9])
    b.update(xs[[0, 3]], [0.1, 0.9])
    _close(a.theta, b.theta, 1e-12)
    _close(a.s, b.s, 1e-12)
    assert a.Delta == pytest.approx(b.Delta, abs=1e-12)


# --------------------------------------------------------------------------- behaviour
def test_theta_stays_valid_distribution():
    rng = np.random.default_rng(11)
    for cats in ([2, 3, 4, 1, 5], [3, 3], [2, 2, 2, 2], [6, 1, 2]):
        opt = CategoricalASNG(cats, rng=int(rng.integers(1 << 30)))
        _check_valid(opt)
        for _ in range(200):
            lam = int(rng.choice([2, 2, 3, 4, 6]))
            opt.update(opt.sample(lam), rng.normal(size=lam))
            _check_valid(opt)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_finds_hidden_target(seed):
    d, k = 10, 4
    target = np.random.default_rng(100 + seed).integers(0, k, size=d)
    opt = CategoricalASNG([k] * d, rng=seed)
    # with the margin, max_j theta_ij <= 1 - (K-1)/(D(K-1)) = 1 - 1/D = 0.9
    assert opt.convergence_ceiling == pytest.approx(0.9)
    assert opt.convergence() == pytest.approx(0.25)
    history = []
    for _ in range(1500):
        x = opt.sample(2)
        opt.update(x, (x != target).sum(axis=1).astype(float))
        history.append(opt.convergence())
        _check_valid(opt)
        if opt.has_converged(0.9 - 1e-6):
            break
    np.testing.assert_array_equal(opt.argmax(), target)
    assert opt.has_converged(0.899)
    assert opt.convergence() <= opt.convergence_ceiling + 1e-12
    # the statistic rose from 0.25 to the ceiling
    assert history[-1] > history[len(history) // 4] > 0.25
    # samples now mostly hit the target
    hits = (opt.sample(200) == target).mean()
    assert hits > 0.85


def test_sampling_frequencies_follow_theta():
    opt = CategoricalASNG([3, 1, 4], rng=7)
    x = np.array([[0, 0, 3], [2, 0, 1]])
    for _ in range(6):
        opt.update(x, [0.0, 1.0])
    th = opt.theta
    xs = opt.sample(40000)
    assert xs.shape == (40000, 3) and xs.dtype == np.int64
    assert np.all(xs[:, 1] == 0)
    for i, k in enumerate([3, 1, 4]):
        freq = np.bincount(xs[:, i], minlength=k) / len(xs)
        np.testing.assert_allclose(freq, th[i, :k], atol=0.01)


def test_onehot_helpers_round_trip():
    opt = CategoricalASNG([2, 5, 1], rng=0)
    x = opt.sample(7)
    oh = opt.to_onehot(x)
    assert oh.shape == (7, 3, 5)
    np.testing.assert_array_equal(oh.sum(axis=2), 1.0)
    np.testing.assert_array_equal(from_onehot(oh), x)
    with pytest.raises(ValueError):
        to_onehot(np.array([[2, 0, 0]]), [2, 5, 1])


def test_constant_only_and_single_decision():
    opt = CategoricalASNG([1, 1], rng=0)
    assert opt.N == 0 and opt.D == 0
    np.testing.assert_array_equal(opt.sample(3), np.zeros((3, 2)))
    assert opt.update(np.zeros((2, 2), int), [1.0, 2.0]) is False
    assert opt.convergence() == 1.0
    # D = 1: the written margin 1/(K-1) is infeasible; 1/(2K) is used and the search still learns
    one = CategoricalASNG([3], rng=0)
    _close(one.theta_min, [1 / 6])
    for _ in range(200):
        x = one.sample(2)
        one.update(x, (x[:, 0] != 2).astype(float))
        _check_valid(one)
    assert one.argmax()[0] == 2


def test_invalid_arguments():
    with pytest.raises(ValueError):
        CategoricalASNG([])
    with pytest.raises(ValueError):
        CategoricalASNG([2, 0])
    with pytest.raises(ValueError):
        CategoricalASNG([3, 3], theta_min=0.5)
    opt = CategoricalASNG([3, 3])
    with pytest.raises(ValueError):
        opt.update(np.array([[0, 3], [0, 0]]), [1.0, 2.0])
    with pytest.raises(ValueError):
        opt.update(np.array([[0, 0], [1, 1]]), [1.0])


# --------------------------------------------------------------------------- persistence
def test_state_dict_round_trip_continues_identically():
    target = np.array([1, 0, 2, 3, 2, 1])
    cats = [4, 3, 3, 4, 5, 2]
    loss_rng = np.random.default_rng(9)

    def loss(x):
        return (x != target).sum(axis=1) + 0.1 * loss_rng.random(len(x))

    opt = CategoricalASNG(cats, delta_max=50.0, rng=123)
    for _ in range(25):
        x = opt.sample(2)
        opt.update(x, loss(x))
    state = json.loads(json.dumps(opt.state_dict()))  # must be plain JSON
    resumed = CategoricalASNG.from_state_dict(state)
    other = CategoricalASNG(cats, rng=999)
    other.load_state_dict(json.loads(json.dumps(opt.state_dict())))
    for _ in range(25):
        x = opt.sample(2)
        np.testing.assert_array_equal(resumed.sample(2), x)
        np.testing.assert_array_equal(other.sample(2), x)
        f = loss(x)
        opt.update(x, f)
        resumed.update(x, f)
        other.update(x, f)
        for r in (resumed, other):
            np.testing.assert_array_equal(r.theta, opt.theta)
            np.testing.assert_array_equal(r.s, opt.s)
            assert (r.gamma, r.Delta, r.step_size) == (opt.gamma, opt.Delta, opt.step_size)
    assert resumed.delta_max == 50.0 and resumed.num_updates == opt.num_updates
    assert resumed.state_dict() == opt.state_dict()
    with pytest.raises(ValueError):
        CategoricalASNG([4, 3]).load_state_dict(state)


def test_state_dict_infinite_delta_max_and_other_bit_generator():
    gen = np.random.Generator(np.random.MT19937(4))
    opt = CategoricalASNG([3, 2, 2], rng=gen)
    opt.update(opt.sample(2), [0.0, 1.0])
    text = json.dumps(opt.state_dict(), allow_nan=False)  # strict JSON: no Infinity
    resumed = CategoricalASNG.from_state_dict(json.loads(text))
    assert math.isinf(resumed.delta_max)
    np.testing.assert_array_equal(resumed.sample(10), opt.sample(10))
