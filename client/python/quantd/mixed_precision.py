"""Mixed precision to a budget: quantize every tensor with every candidate
scheme, keep each tensor's error-vs-bits curve, and choose one scheme per
tensor so that the total size meets a budget with the least total error.

    plan = quantd.plan_mixed_precision(
        client, [("q_proj", wq), ("up_proj", wu)],
        candidates=["int3_asym_g64", "int4_asym_g128", "nf4", "int8"],
        target_bpw=4.5)
    plan.schemes          # {"q_proj": "int4_asym_g128", ...}
    plan.bits_per_weight  # <= 4.5
    for q in client.quantize_many(plan.items(tensors)):
        ...

The optimisation is the multiple-choice knapsack problem, minimise
sum_i e_i(k_i) subject to sum_i b_i(k_i) <= B, solved as quantctl's
--target-bpw solves it (client/mixed_precision.h):
  1. each tensor's curve keeps its Pareto front (no point with more bits
     and more error survives; this never changes the optimum);
  2. dynamic programming over the budget, the bits above each tensor's
     smallest point rounded UP to units of u bits, u the greatest common
     divisor of those extras raised to at most max_units units of slack, so
     every answer fits the budget in exact bits and is exact when u is that
     divisor (always, for budgets under max_units units of slack);
  3. a greedy fill in exact bits with what rounding left over;
  4. a lower bound from the LP relaxation on the lower convex hulls: no
     assignment within the budget has less error than `lower_bound`.

Errors: "weight" is the total squared error sum (w - w_hat)^2 (mse x
elements); "output" is the layer's output-space error ||X(W - W_hat)^T||^2
over each tensor's calibration set (every tensor must name one).
"""
import dataclasses
import math
from functools import reduce
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from quantd import errors
from quantd.scheme import parse_scheme, scheme_name

__all__ = ["CurvePoint", "MixedPrecisionPlan", "choose", "plan_mixed_precision"]


@dataclasses.dataclass(frozen=True)
class CurvePoint:
    """One (tensor, candidate): its stored bits and its error."""
    scheme: str
    bits: float
    error: float


@dataclasses.dataclass
class MixedPrecisionPlan:
    """The chosen scheme per tensor and what it costs."""
    schemes: Dict[str, str]
    bits: float                 # total stored bits of the choice
    error: float                # total error of the choice
    lower_bound: float          # no choice within the budget has less error
    budget_bits: float
    elements: int
    exact: bool                 # the DP ran in exact bits
    curves: Dict[str, List[CurvePoint]]
    # Uniform choices for comparison: (scheme, bits, error) for each candidate
    # every tensor accepts.
    uniform: List[Tuple[str, float, float]]

    @property
    def bits_per_weight(self) -> float:
        return self.bits / self.elements if self.elements else 0.0

    def items(self, tensors: Iterable[Tuple[str, Any]]) -> Iterable[Tuple[str, Any, str]]:
        """(name, array, scheme) for quantize_many, in the order given."""
        for name, array, *rest in tensors:
            yield (name, array, self.schemes[name], *rest)


def _pareto(points: Sequence[CurvePoint]) -> List[CurvePoint]:
    """Points with strictly less error than every smaller one, by bits."""
    out: List[CurvePoint] = []
    for p in sorted(points, key=lambda p: (p.bits, p.error)):
        if not out or p.error < out[-1].error:
            if out and p.bits == out[-1].bits:
                continue
            out.append(p)
    return out


def _lower_bound(fronts: Dict[str, List[CurvePoint]], budget: float) -> float:
    """LP relaxation on each front's lower convex hull."""
    base_bits = sum(f[0].bits for f in fronts.values())
    bound = sum(f[0].error for f in fronts.values())
    segments = []  # (error saved per bit, bits, error saved)
    for front in fronts.values():
        hull = [front[0]]
        for p in front[1:]:
            while len(hull) >= 2:
                a, b = hull[-2], hull[-1]
                # b is above the chord a -> p: not on the lower hull.
                if (b.error - a.error) * (p.bits - a.bits) >= \
                        (p.error - a.error) * (b.bits - a.bits):
                    hull.pop()
                else:
                    break
            hull.append(p)
        for a, b in zip(hull, hull[1:]):
            segments.append(((a.error - b.error) / (b.bits - a.bits),
                             b.bits - a.bits, a.error - b.error))
    left = budget - base_bits
    for slope, bits, saved in sorted(segments, key=lambda s: -s[0]):
        if left <= 0:
            break
        take = min(1.0, left / bits)
        bound -= take * saved
        left -= take * bits
    return bound


def choose(curves: Dict[str, Sequence[CurvePoint]], budget_bits: float,
           max_units: int = 1 << 16) -> Tuple[Dict[str, CurvePoint], float, bool]:
    """One point per tensor with total bits <= budget_bits and the least total
    error (see the module comment). Returns (choice, lower_bound, exact).
    ValueError when even the smallest points exceed the budget or a tensor
    has no point."""
    names = list(curves)
    fronts = {}
    for n in names:
        if not curves[n]:
            raise ValueError(f"tensor {n}: no candidate fits it")
        fronts[n] = _pareto(curves[n])
    base = sum(fronts[n][0].bits for n in names)
    if base > budget_bits:
        raise ValueError(f"the smallest candidates need {base:.0f} bits, more "
                         f"than the budget of {budget_bits:.0f}")
    slack = budget_bits - base
    extras = [round(p.bits - fronts[n][0].bits) for n in names for p in fronts[n]]
    g = reduce(math.gcd, [e for e in extras if e > 0], 0) or 1
    u = g * max(1, math.ceil(slack / g / max_units))
    exact = u == g and all(float(p.bits).is_integer()
                           for n in names for p in fronts[n])
    units = int(slack // u)
    # dp[c]: least error of the tensors so far within c units.
    dp = np.zeros(units + 1)
    picks = []
    for n in names:
        front = fronts[n]
        best = np.full(units + 1, np.inf)
        pick = np.zeros(units + 1, dtype=np.int32)
        for k, p in enumerate(front):
            cost = math.ceil((p.bits - front[0].bits) / u - 1e-9)
            if cost > units:
                continue
            cand = np.full(units + 1, np.inf)
            cand[cost:] = dp[:units + 1 - cost] + p.error
            better = cand < best
            best[better] = cand[better]
            pick[better] = k
        dp = best
        picks.append(pick)
    c = int(np.argmin(dp))
    chosen_index = {}
    for i in range(len(names) - 1, -1, -1):
        k = int(picks[i][c])
        chosen_index[names[i]] = k
        front = fronts[names[i]]
        c -= math.ceil((front[k].bits - front[0].bits) / u - 1e-9)
    # Greedy fill in exact bits.
    left = budget_bits - sum(fronts[n][chosen_index[n]].bits for n in names)
    while True:
        best_move = None
        for n in names:
            cur = fronts[n][chosen_index[n]]
            for k, p in enumerate(fronts[n]):
                extra = p.bits - cur.bits
                if p.error < cur.error and extra <= left:
                    gain = cur.error - p.error
                    if best_move is None or gain > best_move[0]:
                        best_move = (gain, n, k, extra)
        if best_move is None:
            break
        _, n, k, extra = best_move
        chosen_index[n] = k
        left -= extra
    choice = {n: fronts[n][chosen_index[n]] for n in names}
    return choice, _lower_bound(fronts, budget_bits), exact


def plan_mixed_precision(client, tensors: Iterable[Tuple[str, Any]],
                         candidates: Sequence[str], *,
                         target_bpw: Optional[float] = None,
                         target_bytes: Optional[int] = None,
                         error: str = "weight",
                         calibration_sets: Sequence[Any] = (),
                         max_units: int = 1 << 16) -> MixedPrecisionPlan:
    """Measures every (tensor, candidate) on the server and chooses.

    Args:
      client: a quantd.Client.
      tensors: (name, array) or (name, array, calibration) items (calibration:
        a set of calibration_sets by name, or a quantd.Calibration), as for
        quantize_many. Held in memory for the measuring pass.
      candidates: scheme texts; a candidate a tensor's shape refuses
        (INVALID_ARGUMENT) is left out of that tensor's curve.
      target_bpw / target_bytes: the budget (exactly one), over the elements
        of the given tensors.
      error: "weight" or "output" (needs a calibration set per tensor).
    """
    if (target_bpw is None) == (target_bytes is None):
        raise ValueError("give exactly one of target_bpw and target_bytes")
    if error not in ("weight", "output"):
        raise ValueError(f"error must be 'weight' or 'output', not {error!r}")
    names = [parse_scheme(c) for c in candidates]
    canonical = [scheme_name(s) for s in names]
    if not canonical:
        raise ValueError("no candidate scheme given")
    items = list(tensors)
    elements = {}
    for name, array, *_ in items:
        elements[name] = int(np.asarray(array).size)
    total = sum(elements.values())
    budget = target_bpw * total if target_bpw is not None else 8.0 * target_bytes
    jobs = []
    which = {}  # job name -> (candidate, tensor)
    for name, array, *rest in items:
        for text in canonical:
            job = f"candidate{len(jobs)}"
            which[job] = (text, name)
            jobs.append((job, array, text, *rest))
    curves: Dict[str, List[CurvePoint]] = {name: [] for name in elements}
    for r in client.quantize_many(jobs, output="packed", return_exceptions=True,
                                  calibration_sets=calibration_sets):
        if isinstance(r, errors.InvalidArgumentError):
            continue  # a shape this candidate does not take
        if isinstance(r, Exception):
            raise r
        text, name = which[r.name]
        n = elements[name]
        if error == "output":
            if r.output_metrics is None:
                raise ValueError(f"tensor {name}: error='output' needs a "
                                 "calibration set with activations or G")
            e = r.output_metrics.error_sq
        else:
            e = r.metrics.mse * n
        curves[name].append(CurvePoint(text, r.metrics.bits_per_weight * n, e))
    choice, bound, exact = choose(curves, budget, max_units)
    uniform = []
    for text in canonical:
        pts = [next((p for p in curves[n] if p.scheme == text), None) for n in curves]
        if all(p is not None for p in pts):
            uniform.append((text, sum(p.bits for p in pts), sum(p.error for p in pts)))
    return MixedPrecisionPlan(
        schemes={n: p.scheme for n, p in choice.items()},
        bits=sum(p.bits for p in choice.values()),
        error=sum(p.error for p in choice.values()),
        lower_bound=bound, budget_bits=budget, elements=total, exact=exact,
        curves=curves, uniform=uniform)
