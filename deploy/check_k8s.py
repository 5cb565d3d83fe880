"""Validates rendered Kubernetes manifests (deploy/check-k8s runs this).

    python deploy/check_k8s.py --versions "1.30.0 1.33.0" \
        --rules-out RULES.yaml --adapter VALUES.yaml RENDERED.yaml...

Every core object (any apiVersion outside monitoring.coreos.com) must pass
kubernetes-validate in strict mode for each version. ServiceMonitor and
PrometheusRule objects (no schema in kubernetes-validate) are checked for
the fields the Prometheus Operator needs, and the rules of every
PrometheusRule are written to --rules-out for `promtool check rules`. On top
of the schemas, the properties the deployment relies on are asserted:
native gRPC probes, non-root read-only root filesystem, a grace period
longer than preStop plus --drain_seconds, an HPA metric that the
prometheus-adapter rule provides, Services and selectors that match.
Exits non-zero on the first list of failures.
"""
import argparse
import json
import re
import sys

import kubernetes_validate
import yaml

MONITORING = "monitoring.coreos.com/v1"
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def check_deployment(d, where):
    spec = d["spec"]["template"]["spec"]
    c = spec["containers"][0]
    name = f"{where} Deployment/{d['metadata']['name']}"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        check("grpc" in c.get(probe, {}), f"{name}: {probe} is not a native gRPC probe")
    check(c.get("readinessProbe", {}).get("grpc", {}).get("service") ==
          "quantd.v1.Quantizer", f"{name}: readiness must check quantd.v1.Quantizer")
    sc = c.get("securityContext", {})
    check(sc.get("readOnlyRootFilesystem") is True, f"{name}: root filesystem not read-only")
    check(sc.get("allowPrivilegeEscalation") is False, f"{name}: privilege escalation allowed")
    check(spec.get("securityContext", {}).get("runAsNonRoot") is True, f"{name}: not runAsNonRoot")
    check(spec.get("securityContext", {}).get("runAsUser", 0) != 0, f"{name}: runs as uid 0")
    res = c.get("resources", {})
    check("cpu" in res.get("requests", {}) and "memory" in res.get("limits", {}),
          f"{name}: cpu request or memory limit missing")
    drain = 30.0
    for arg in c.get("args", []):
        m = re.fullmatch(r"--drain_seconds=([0-9.]+)", arg)
        if m:
            drain = float(m.group(1))
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    check(pre_stop > 0, f"{name}: no preStop sleep")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(grace > pre_stop + drain,
          f"{name}: terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain {drain}")


def check_monitoring(d, where, rules):
    kind, name = d["kind"], d["metadata"]["name"]
    if kind == "ServiceMonitor":
        eps = d["spec"].get("endpoints", [])
        check(eps and all("port" in e for e in eps), f"{where} ServiceMonitor/{name}: endpoints need a port")
        check(d["spec"].get("selector", {}).get("matchLabels"), f"{where} ServiceMonitor/{name}: no selector")
    elif kind == "PrometheusRule":
        groups = d["spec"]["groups"]
        rules["groups"].extend(groups)
        alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
        for metric in ("grpc_server_handled_total", "quantd_queue_depth",
                       "quantd_memory_budget_bytes", "quantd_job_duration_seconds_bucket"):
            check(any(metric in r["expr"] for g in groups for r in g["rules"]),
                  f"{where} PrometheusRule/{name}: no alert on {metric}")
        check(len(alerts) >= 4, f"{where} PrometheusRule/{name}: fewer than 4 alerts")
    else:
        failures.append(f"{where}: unexpected {MONITORING} kind {kind}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", required=True)
    parser.add_argument("--rules-out", required=True)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("rendered", nargs="+")
    args = parser.parse_args()
    versions = args.versions.split()
    rules = {"groups": []}
    with open(args.adapter) as f:
        adapter = yaml.safe_load(f)
    adapter_metrics = {r["name"]["as"] for r in adapter["rules"]["custom"]}

    for path in args.rendered:
        where = path.rsplit("/", 1)[-1]
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        check(docs, f"{where}: renders nothing")
        kinds = {}
        for d in docs:
            kinds.setdefault(d["kind"], []).append(d)
            if d["apiVersion"] == MONITORING:
                check_monitoring(d, where, rules)
                continue
            for v in versions:
                try:
                    kubernetes_validate.validate(d, v, strict=True)
                except kubernetes_validate.ValidationError as e:
                    failures.append(f"{where} {d['kind']}/{d['metadata']['name']} "
                                    f"(k8s {v}): {e.message} at {list(e.path)}")
            if d["kind"] == "Deployment":
                check_deployment(d, where)
            if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"].get("labels", {}):
                for key, text in d["data"].items():
                    check(json.loads(text).get("panels"), f"{where} ConfigMap {key}: no panels")
            if d["kind"] == "HorizontalPodAutoscaler":
                for m in d["spec"].get("metrics", []):
                    if m["type"] == "Pods":
                        metric = m["pods"]["metric"]["name"]
                        check(metric in adapter_metrics,
                              f"{where} HPA: {metric} not served by the prometheus-adapter rule")
        services = kinds.get("Service", [])
        check(any(s["spec"].get("clusterIP") == "None" for s in services), f"{where}: no headless Service")
        check(any(s["spec"].get("clusterIP") != "None" for s in services), f"{where}: no ClusterIP Service")
        pod_labels = kinds["Deployment"][0]["spec"]["template"]["metadata"]["labels"]
        for obj in services + kinds.get("PodDisruptionBudget", []) + kinds.get("NetworkPolicy", []):
            sel = obj["spec"].get("selector") or obj["spec"].get("podSelector")
            sel = sel.get("matchLabels", sel)
            check(sel and all(pod_labels.get(k) == v for k, v in sel.items()),
                  f"{where} {obj['kind']}/{obj['metadata']['name']}: selector matches no pod")
        for kind in ("PodDisruptionBudget", "NetworkPolicy"):
            check(kind in kinds, f"{where}: no {kind}")
        print(f"check-k8s: {where}: {len(docs)} objects valid "
              f"(Kubernetes {', '.join(versions)}): {', '.join(sorted(kinds))}")

    check(rules["groups"], "no PrometheusRule in any overlay")
    with open(args.rules_out, "w") as f:
        yaml.safe_dump(rules, f, sort_keys=False)
    if failures:
        print("check-k8s: FAILED", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
