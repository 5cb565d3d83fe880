"""Scale-out: one quantctl run balanced over three real servers on loopback
through a single gRPC channel with the round_robin policy, and a dns:///
target. Each server's own /metrics must show a share of the tensors, and
the output must equal a single-server run's byte for byte.

On loopback a DNS name gives at most one address per family, so three
replicas are reached with gRPC's static list target
"ipv4:127.0.0.1:A,127.0.0.1:B,127.0.0.1:C" (the same resolver-to-round_robin
path a headless Service's dns:/// name takes), and dns:///localhost:PORT is
checked against one server.
"""
import re
import subprocess
import urllib.request

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import BIN_DIR, Server

NUM_TENSORS = 24


def _jobs_ok(server):
    """quantd_jobs_total{outcome="ok"} summed over schemes, from /metrics."""
    with urllib.request.urlopen(
            f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(
        r'^quantd_jobs_total\{[^}]*outcome="ok"[^}]*\} (\S+)$', text, re.M))


def _quantize(model, out, target):
    subprocess.run(
        [str(BIN_DIR / "client" / "quantctl"), "quantize", str(model),
         "--scheme", "int4_asym_g64", "--out", str(out), "--server", target,
         "--progress", "none", "--quiet"], check=True, timeout=300)
    return out.read_bytes()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(66)
    path = tmp_path_factory.mktemp("scale") / "model.safetensors"
    save_file({f"layers.{i:02d}.weight":
               rng.standard_normal((128, 512)).astype(np.float32)
               for i in range(NUM_TENSORS)}, str(path))
    return path


@pytest.fixture(scope="module")
def servers():
    started = [Server() for _ in range(3)]
    yield started
    for s in started:
        assert s.stop() == 0, "".join(s.log)


def test_round_robin_over_three_servers_shares_work_and_equals_one(
        model, servers, tmp_path):
    single = _quantize(model, tmp_path / "single.safetensors", servers[0].target)
    before = [_jobs_ok(s) for s in servers]
    assert before[0] == NUM_TENSORS and before[1:] == [0, 0]

    target = "ipv4:" + ",".join(s.target for s in servers)
    balanced = _quantize(model, tmp_path / "balanced.safetensors", target)

    shares = [_jobs_ok(s) - b for s, b in zip(servers, before)]
    assert sum(shares) == NUM_TENSORS, shares
    assert all(share > 0 for share in shares), f"a server did no work: {shares}"
    assert balanced == single


def test_dns_target(model, servers, tmp_path):
    single = _quantize(model, tmp_path / "single.safetensors", servers[1].target)
    before = _jobs_ok(servers[1])
    via_dns = _quantize(model, tmp_path / "dns.safetensors",
                        f"dns:///localhost:{servers[1].grpc_port}")
    assert _jobs_ok(servers[1]) - before == NUM_TENSORS
    assert via_dns == single
