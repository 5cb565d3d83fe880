"""Proves the Grafana dashboard against a real Prometheus and a real quantd
(deploy/check-dashboard runs this; ctest runs it as deploy_dashboard).

    python deploy/check_dashboard.py --bin-dir BUILD_DIR

Starts quantd and Prometheus on 127.0.0.1 (ephemeral ports, temporary
storage, 1 s scrape and rule evaluation interval, the alert rules of the
example overlay loaded), drives a short real load with quantctl (good
tensors in two schemes and one tensor with a NaN, which the server rejects),
waits until Prometheus has scraped all of it, then runs every query of every
panel and template variable of deploy/grafana/quantd.json through the HTTP
API. Fails if any returns no data (an empty result, or only NaN), if any
alert rule fails to evaluate, or if `promtool check metrics` finds anything
in the live /metrics. Every wait is bounded; the processes are stopped on
exit.
"""
import argparse
import json
import math
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import yaml
from safetensors.numpy import save_file

DEPLOY = pathlib.Path(__file__).resolve().parent
DASHBOARD = DEPLOY / "grafana" / "quantd.json"
RULES = DEPLOY / "k8s" / "overlays" / "example" / "prometheusrule.yaml"
# Grafana's variables, as a user with "All" selected would send them.
VARIABLES = {"$__rate_interval": "1m", "$job": ".+", "$scheme": ".+"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_for(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"check-dashboard: timed out after {timeout} s waiting for {what}")


class Quantd:
    def __init__(self, binary):
        self.proc = subprocess.Popen(
            [binary, "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
             "--workers=2"], stderr=subprocess.PIPE, text=True)
        self.ports = None
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("msg") == "serving":
                    self.ports = (entry["grpc_port"], entry["metrics_port"])
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(30) or self.ports is None:
            raise SystemExit("check-dashboard: quantd did not start")


def query(base, expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    reply = json.loads(http_get(url))
    if reply["status"] != "success":
        raise SystemExit(f"check-dashboard: query failed: {expr}: {reply}")
    return reply["data"]["result"]


def finite_values(result):
    return [float(r["value"][1]) for r in result
            if not math.isnan(float(r["value"][1]))]


def load(quantctl, target, work, good):
    """Good tensors in two schemes, then one NaN tensor the server rejects."""
    for scheme in ("int4_asym_g128", "int8"):
        subprocess.run([quantctl, "quantize", str(work / "good.safetensors"),
                        "--scheme", scheme, "--out", str(work / f"{scheme}.safetensors"),
                        "--server", target, "--progress", "none", "--quiet"],
                       check=True, timeout=120, stdout=subprocess.DEVNULL)
    rc = subprocess.run([quantctl, "quantize", str(work / "bad.safetensors"),
                         "--scheme", "int4", "--out", str(work / "bad-out.safetensors"),
                         "--server", target, "--progress", "none", "--quiet",
                         "--max-attempts", "1"],
                        timeout=120, stdout=subprocess.DEVNULL).returncode
    if rc == 0:
        raise SystemExit("check-dashboard: a NaN tensor was accepted")


def panel_queries(dashboard):
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"unsubstituted variable in {expr}"
            yield panel["title"], target["refId"], expr


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    args = parser.parse_args()
    bin_dir = pathlib.Path(args.bin_dir)
    dashboard = json.loads(DASHBOARD.read_text())
    work = pathlib.Path(tempfile.mkdtemp(prefix="quantd-dashboard."))
    procs = []
    try:
        server = Quantd(str(bin_dir / "server" / "quantd"))
        procs.append(server.proc)
        grpc_port, metrics_port = server.ports

        rules = yaml.safe_load(RULES.read_text())["spec"]
        (work / "rules.yaml").write_text(yaml.safe_dump(rules))
        (work / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(work / "rules.yaml")],
            "scrape_configs": [{
                "job_name": "quantd",
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
            }],
        }))
        prom_port = free_port()
        base = f"http://127.0.0.1:{prom_port}"
        prom_log = open(work / "prometheus.log", "w")
        procs.append(subprocess.Popen(
            [shutil.which("prometheus") or "/usr/bin/prometheus",
             f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=prom_log, stderr=subprocess.STDOUT))
        wait_for("Prometheus ready", lambda: "Ready" in http_get(f"{base}/-/ready"), 60)
        wait_for("the first scrape of quantd",
                 lambda: finite_values(query(base, 'up{job="quantd"} == 1')), 30)
        print(f"check-dashboard: Prometheus on 127.0.0.1:{prom_port} scrapes "
              f"quantd on 127.0.0.1:{metrics_port}")

        # A short real load: good tensors in two schemes, one bad tensor.
        rng = np.random.default_rng(6)
        good = {f"layers.{i}.weight": rng.standard_normal((256, 512)).astype(np.float32)
                for i in range(8)}
        save_file(good, str(work / "good.safetensors"))
        bad = rng.standard_normal((64, 128)).astype(np.float32)
        bad[3, 5] = np.nan
        save_file({"bad.weight": bad}, str(work / "bad.safetensors"))
        quantctl = str(bin_dir / "client" / "quantctl")
        target = f"127.0.0.1:{grpc_port}"

        def jobs_counted():
            live = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
            return sum(float(m.group(1)) for m in re.finditer(
                r"^quantd_jobs_total\{[^}]*\} (\S+)$", live, re.M))

        def scraped(jobs):
            # Everything counted has reached Prometheus, and one scrape more
            # so each new series has two samples (rate() needs them).
            wait_for(f"Prometheus to scrape all {jobs:.0f} jobs",
                     lambda: finite_values(query(base, "sum(quantd_jobs_total)")) == [jobs], 30)
            time.sleep(2.5)

        # Round 1 creates the labelled series; round 2, once they have been
        # scraped, makes every rate() over them move, as steady load would.
        for round_ in (1, 2):
            load(quantctl, target, work, good)
            jobs = jobs_counted()
            if jobs != round_ * (2 * len(good) + 1):
                raise SystemExit(f"check-dashboard: server counted {jobs} jobs in round {round_}")
            scraped(jobs)
        live = http_get(f"http://127.0.0.1:{metrics_port}/metrics")

        empty = []
        n = 0
        for title, ref, expr in panel_queries(dashboard):
            n += 1
            values = finite_values(query(base, expr))
            print(f"check-dashboard: {'ok   ' if values else 'EMPTY'} {title} [{ref}]: "
                  f"{len(values)} series")
            if not values:
                empty.append(f"{title} [{ref}]: {expr}")
        for var in dashboard["templating"]["list"]:
            m = re.fullmatch(r"label_values\((\w+), (\w+)\)", var.get("definition", ""))
            if not m:
                continue
            url = (f"{base}/api/v1/label/{m.group(2)}/values?" +
                   urllib.parse.urlencode({"match[]": m.group(1)}))
            values = json.loads(http_get(url))["data"]
            print(f"check-dashboard: variable ${var['name']}: {values}")
            if not values:
                empty.append(f"variable {var['name']}")
        if n < 10:
            empty.append(f"only {n} panel queries")

        # The alert rules evaluate against the real series without error.
        wait_for("a rule evaluation", lambda: all(
            r.get("lastEvaluation", "").startswith("2") and
            not r["lastEvaluation"].startswith("0001")
            for g in json.loads(http_get(f"{base}/api/v1/rules"))["data"]["groups"]
            for r in g["rules"]), 30)
        for g in json.loads(http_get(f"{base}/api/v1/rules"))["data"]["groups"]:
            for r in g["rules"]:
                if r["health"] != "ok":
                    empty.append(f"rule {r['name']}: {r.get('lastError')}")
        print(f"check-dashboard: {sum(len(g['rules']) for g in rules['groups'])} "
              "alert rules evaluate")

        lint = subprocess.run(["promtool", "check", "metrics"], input=live,
                              capture_output=True, text=True, timeout=60)
        if lint.returncode != 0 or lint.stdout.strip() or lint.stderr.strip():
            empty.append(f"promtool check metrics: {lint.stdout}{lint.stderr}")
        else:
            print("check-dashboard: promtool check metrics: clean")
        if empty:
            print("check-dashboard: FAILED", *empty, sep="\n  ", file=sys.stderr)
            return 1
        print(f"check-dashboard: ok: {n} panel queries return data")
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
