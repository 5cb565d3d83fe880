"""Mixed precision to a budget in the SDK: the multiple-choice knapsack
solver equals brute force on small instances (exact) and stays feasible
with its lower bound below the optimum when coarsened; against a real
server the plan meets the budget and has no more error than any uniform
candidate that fits, at every uniform candidate's own size."""
import itertools
import math

import numpy as np
import pytest

import quantd
from quantd.mixed_precision import CurvePoint, choose


def brute_force(curves, budget):
    best = math.inf
    for combo in itertools.product(*curves.values()):
        if sum(p.bits for p in combo) <= budget:
            best = min(best, sum(p.error for p in combo))
    return best


def random_curves(rng, tensors, points):
    curves = {}
    for t in range(tensors):
        pts = []
        for k in range(int(rng.integers(1, points + 1))):
            bits = float(rng.integers(10, 200))
            pts.append(CurvePoint(f"s{k}", bits, float(rng.random() * 1000 / bits)))
        curves[f"t{t}"] = pts
    return curves


def test_choice_equals_brute_force_on_small_instances():
    rng = np.random.default_rng(7)
    solved = 0
    for _ in range(300):
        curves = random_curves(rng, int(rng.integers(1, 5)), 5)
        lo = sum(min(p.bits for p in c) for c in curves.values())
        hi = sum(max(p.bits for p in c) for c in curves.values())
        budget = float(rng.integers(int(lo), int(hi) + 1))
        choice, bound, exact = choose(curves, budget)
        assert exact
        bits = sum(p.bits for p in choice.values())
        error = sum(p.error for p in choice.values())
        assert bits <= budget
        assert error == pytest.approx(brute_force(curves, budget), rel=1e-12)
        assert bound <= error + 1e-9
        solved += 1
    assert solved == 300


def test_coarsened_choice_is_feasible_and_bounded():
    rng = np.random.default_rng(8)
    for _ in range(100):
        curves = random_curves(rng, 6, 6)
        lo = sum(min(p.bits for p in c) for c in curves.values())
        hi = sum(max(p.bits for p in c) for c in curves.values())
        budget = (lo + hi) / 2
        choice, bound, exact = choose(curves, budget, max_units=8)
        bits = sum(p.bits for p in choice.values())
        error = sum(p.error for p in choice.values())
        assert bits <= budget
        optimum = brute_force(curves, budget)
        assert bound <= optimum + 1e-9 and optimum <= error + 1e-9


def test_budget_below_the_smallest_choice_is_refused():
    curves = {"a": [CurvePoint("x", 100.0, 1.0)]}
    with pytest.raises(ValueError, match="budget"):
        choose(curves, 50.0)


def tensors():
    rng = np.random.default_rng(3)
    out = []
    for i in range(6):
        w = rng.standard_normal((64, 256)).astype(np.float32) * 0.02
        if i % 2:  # heavy outlier channels: these want more bits
            w[:, ::17] *= 12.0
        out.append((f"layer{i}", w))
    return out


CANDIDATES = ["int2_asym_g64", "int3_asym_g128", "int4_asym_g128", "nf4",
              "int8"]


def test_plan_meets_the_budget_and_beats_uniform(client):
    ts = tensors()
    plan = quantd.plan_mixed_precision(client, ts, CANDIDATES, target_bpw=4.5)
    assert plan.bits <= plan.budget_bits
    assert plan.bits_per_weight <= 4.5
    assert set(plan.schemes) == {n for n, _ in ts}
    assert plan.lower_bound <= plan.error
    # Points are the server's: one checked against a direct call.
    q = client.quantize(ts[1][1], "nf4", name="check", output="packed")
    point = next(p for p in plan.curves["layer1"] if p.scheme == quantd.scheme_name(quantd.parse_scheme("nf4")))
    assert point.error == pytest.approx(q.metrics.mse * ts[1][1].size)
    assert point.bits == pytest.approx(q.metrics.bits_per_weight * ts[1][1].size)
    better = 0
    for scheme, bits, error in plan.uniform:
        if bits <= plan.budget_bits:
            assert plan.error <= error * (1 + 1e-12), scheme
        # At the uniform candidate's own size, the mixed choice is no worse.
        at = quantd.plan_mixed_precision(client, ts, CANDIDATES,
                                         target_bytes=bits / 8)
        assert at.bits <= bits and at.error <= error * (1 + 1e-12), scheme
        better += at.error < error * (1 - 1e-6)
    assert better >= 2
    # Quantizing with the plan gives its size.
    results = {r.name: r for r in client.quantize_many(plan.items(ts),
                                                        output="packed")}
    total = sum(results[n].metrics.bits_per_weight * w.size for n, w in ts)
    assert total == pytest.approx(plan.bits)


def test_plan_on_output_error_uses_the_calibration_sets(client):
    rng = np.random.default_rng(4)
    ts = tensors()[:3]
    x = rng.standard_normal((200, 256)).astype(np.float32)
    x[:, 5] *= 30.0
    cal = quantd.Calibration("x", activations=x)
    items = [(n, w, "x") for n, w in ts]
    plan = quantd.plan_mixed_precision(client, items, CANDIDATES,
                                       target_bpw=4.0, error="output",
                                       calibration_sets=[cal])
    assert plan.bits_per_weight <= 4.0
    for name, w in ts:
        for p in plan.curves[name]:
            assert p.error > 0
    with pytest.raises(ValueError, match="calibration"):
        quantd.plan_mixed_precision(client, ts, CANDIDATES, target_bpw=4.0,
                                    error="output")


def test_a_candidate_a_shape_refuses_is_left_out(client):
    w = np.random.default_rng(5).standard_normal((8, 96)).astype(np.float32)
    plan = quantd.plan_mixed_precision(client, [("odd", w)],
                                       ["int4_asym_g32", "Q4_K", "int8"],
                                       target_bpw=6.0)
    assert {p.scheme for p in plan.curves["odd"]} == {"int4_asym_g32", "int8_sym_channel"}
    assert plan.schemes["odd"] == "int4_asym_g32"
