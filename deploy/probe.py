"""Checks a running quantd from outside, as Kubernetes and a client would.

    python deploy/probe.py HOST:PORT [--metrics HOST:PORT] [--timeout SECONDS]

Waits (at most --timeout seconds) until grpc.health.v1.Health answers
SERVING for "" (liveness) and "quantd.v1.Quantizer" (readiness), then
checks that server reflection lists quantd.v1.Quantizer and the health
service, and, with --metrics, that /metrics serves quantd_build_info.
Exits 0 when all hold, 1 otherwise. Needs grpcio, grpcio-health-checking
and grpcio-reflection.
"""
import argparse
import sys
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def wait_serving(channel, service, deadline):
    stub = health_pb2_grpc.HealthStub(channel)
    last = None
    while time.monotonic() < deadline:
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service),
                               timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as e:
            last = e.code().name
        time.sleep(0.2)
    raise SystemExit(f"probe: health {service!r} not SERVING (last: {last})")


def list_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
        timeout=10)
    for reply in replies:
        return {s.name for s in reply.list_services_response.service}
    return set()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("--metrics")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    with grpc.insecure_channel(args.target) as channel:
        wait_serving(channel, "", deadline)
        wait_serving(channel, "quantd.v1.Quantizer", deadline)
        print("probe: health '' and 'quantd.v1.Quantizer' SERVING")
        services = list_services(channel)
        want = {"quantd.v1.Quantizer", "grpc.health.v1.Health"}
        if not want <= services:
            raise SystemExit(f"probe: reflection lists {sorted(services)}")
        print(f"probe: reflection lists {', '.join(sorted(services))}")
    if args.metrics:
        body = urllib.request.urlopen(f"http://{args.metrics}/metrics",
                                      timeout=10).read().decode()
        if "quantd_build_info{" not in body:
            raise SystemExit("probe: /metrics has no quantd_build_info")
        print("probe: /metrics serves quantd_build_info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
