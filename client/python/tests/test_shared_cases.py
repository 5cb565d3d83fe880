"""The cases the C++ code and the SDK must agree on
(tests/data/shared_cases.json, also read by tests/client/shared_cases_test.cc),
against the SDK: scheme texts through parse_scheme / scheme_name, knapsack
instances through mixed_precision.choose, and the retried status codes
through the client's retry decision, on a fake server that fails every call
with one code.

The file's path is QUANTD_SHARED_CASES (ctest sets it), else found from this
checkout."""
import itertools
import json
import math
import os
import pathlib
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest

import quantd
from conftest import ROOT
from quantd import client as client_module
from quantd.mixed_precision import CurvePoint, choose
from quantd.v1 import quantizer_pb2_grpc as pb_grpc

CASES_PATH = pathlib.Path(os.environ.get("QUANTD_SHARED_CASES") or
                          ROOT / "tests" / "data" / "shared_cases.json")
CASES = json.loads(CASES_PATH.read_text())
SCHEMES = CASES["schemes"]
RETRIED = CASES["retry"]["retried"]


# --- schemes -------------------------------------------------------------------

@pytest.mark.parametrize("case", SCHEMES["canonical"], ids=lambda c: c["text"])
def test_scheme_text_gives_its_canonical_form(case):
    sdk = case.get("sdk", case["canonical"])
    assert quantd.scheme_name(quantd.parse_scheme(case["text"])) == sdk
    # The SDK reads the canonical text unchanged too.
    canonical = quantd.parse_scheme(case["canonical"])
    assert quantd.scheme_name(canonical) == case["canonical"]


@pytest.mark.parametrize("text", SCHEMES["refused"])
def test_refused_scheme_text(text):
    with pytest.raises(ValueError):
        quantd.parse_scheme(text)


@pytest.mark.parametrize("text", SCHEMES["sdk_accepts"])
def test_scheme_text_the_sdk_leaves_to_the_server(text):
    try:
        quantd.parse_scheme(text)
    except ValueError as e:
        pytest.fail(f"the SDK now refuses {text!r} ({e}): move it to "
                    f"schemes.refused in {CASES_PATH.name}")


# --- mixed precision -------------------------------------------------------------

def brute_force(curves, budget):
    best = math.inf
    for combo in itertools.product(*curves.values()):
        if sum(p.bits for p in combo) <= budget:
            best = min(best, sum(p.error for p in combo))
    return best


@pytest.mark.parametrize("instance", CASES["mixed_precision"]["instances"],
                         ids=lambda i: i["about"][:40])
def test_mixed_precision_finds_the_optimum(instance):
    curves = {f"t{i}": [CurvePoint(f"t{i}[{k}]", float(b), float(e))
                        for k, (b, e) in enumerate(points)]
              for i, points in enumerate(instance["tensors"])}
    assert instance["budgets"]
    for case in instance["budgets"]:
        budget = float(case["budget_bits"])
        optimum = case["optimum_error"]
        if optimum is None:
            assert brute_force(curves, budget) == math.inf, \
                f"budget {budget}: the file says infeasible"
            with pytest.raises(ValueError, match="budget"):
                choose(curves, budget)
            continue
        assert brute_force(curves, budget) == pytest.approx(optimum, rel=1e-9), \
            f"budget {budget}: the file's optimum is wrong"
        choice, bound, exact = choose(curves, budget)
        assert exact, f"budget {budget}"
        assert sorted(choice) == sorted(curves)
        for name, point in choice.items():
            assert point in curves[name]
        assert sum(p.bits for p in choice.values()) <= budget
        error = sum(p.error for p in choice.values())
        assert error == pytest.approx(optimum, rel=1e-9), f"budget {budget}"
        assert bound <= optimum + 1e-9 * max(1.0, optimum), f"budget {budget}"


# --- retried status codes -----------------------------------------------------------

def test_retried_codes_are_status_codes():
    assert RETRIED
    assert len(set(RETRIED)) == len(RETRIED)
    names = {c.name for c in grpc.StatusCode}
    assert set(RETRIED) <= names - {"OK"}


def test_the_clients_transient_set_is_the_files():
    assert set(client_module._TRANSIENT) == {grpc.StatusCode[n] for n in RETRIED}


class FailingServer(pb_grpc.QuantizerServicer):
    """Fails every call with `code`, counting the calls."""

    def __init__(self):
        self.code = grpc.StatusCode.UNKNOWN
        self.calls = 0
        self.lock = threading.Lock()

    def _fail(self, context):
        with self.lock:
            self.calls += 1
        context.abort(self.code, "tensor w: injected failure")

    def Quantize(self, request_iterator, context):
        next(request_iterator, None)  # the JobStart
        self._fail(context)

    def GetServerInfo(self, request, context):
        self._fail(context)


@pytest.fixture(scope="module")
def failing():
    servicer = FailingServer()
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_QuantizerServicer_to_server(servicer, s)
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    yield servicer, f"127.0.0.1:{port}"
    s.stop(None)


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode
                                  if c != grpc.StatusCode.OK],
                         ids=lambda c: c.name)
def test_a_code_is_retried_exactly_when_the_file_says(failing, code):
    servicer, target = failing
    servicer.code = code
    sends = 2 if code.name in RETRIED else 1
    with quantd.Client(target, max_attempts=2, backoff_seconds=0.001,
                       max_backoff_seconds=0.001) as c:
        servicer.calls = 0
        with pytest.raises(quantd.QuantdError) as e:
            c.quantize(np.ones((2, 8), np.float32), "int8", name="w")
        assert e.value.code == code
        assert servicer.calls == sends, "Quantize streams"
        servicer.calls = 0
        with pytest.raises(quantd.QuantdError) as e:
            c.server_info()
        assert e.value.code == code
        assert servicer.calls == sends, "GetServerInfo calls"
