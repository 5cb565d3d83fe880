#!/usr/bin/env python3
"""quantd against llama.cpp on a ~1 B parameter model: wall time and GB/s of
f32 input to produce a GGUF of one llama.cpp file type, per implementation,
with the ratio to llama.cpp. Run by hand (never part of ctest):

  ~/.cache/quantd/venv/bin/python bench/ggml_vs_llamacpp.py CACHE_DIR \
      [--bin-dir build] [--types Q8_0,Q4_0,Q4_K_M] [--nthread 2] \
      [--sides llama,kernels,tool,grpc] [--repeat N] [--workers N] \
      [--out-dir DIR]

CACHE_DIR keeps the synthetic model (an f32 GGUF of ~4.4 GB, llama
architecture, Llama-3.2-1B-like widths, LLM-like random weights made with
the gguf package; written once, reused) and the outputs.

Sides (each a function returning seconds, or raising Unavailable):
  - llama.cpp: llama_model_quantize from llama-cpp-python (what
    llama-quantize runs) with --nthread threads. A file type named like its
    one ggml type (Q8_0, Q4_0) runs pure, every matrix in that type (else
    llama.cpp would make output.weight Q6_K); a mixture (Q4_K_M) runs as
    llama-quantize does by default. The time includes reading the f32 file (page cache
    after the first run) and writing the output.
  - quantd kernels only, 1 thread: each ggml type's GB/s from
    quantd_kernels_bench (GgmlQuantize's fast path on a 4096-wide tensor),
    applied to the model's f32 bytes per type llama.cpp chose: the time the
    kernels alone would take, without file or process I/O.
  - quantd ggml_quantize_tool: the tool run per tensor with llama.cpp's
    type, f32 from a file on stdin, blocks to stdout; its time is mostly the
    tool's stream reading, but it checks every tensor's bytes against
    llama.cpp's file.
  - quantd over gRPC: `quantctl quantize IN.gguf --type T --out OUT.gguf`
    (with --pure where llama.cpp runs pure) against a local quantd with
    --workers workers (default 2) on loopback, started before the clock
    starts; the time is quantctl's whole run (reading the mmap'd f32 file,
    streaming, writing and syncing the output). Its output's tensors are
    compared with llama.cpp's file, type and bytes.
GB/s is the f32 bytes of all tensors of the model divided by wall time;
CPU s is the user + system time each side used (llama.cpp runs in this
process; the gRPC side counts quantctl and quantd). --out-dir puts both
sides' outputs elsewhere, e.g. on a tmpfs: quantctl syncs its output to
disk before renaming it and llama.cpp does not, so on a slow disk the
comparison would be the disk's. With --repeat N each timed side runs N times and the median is reported
(the byte checks use the last run). The machine is shared, so ratios in
one run mean more than absolute figures.
"""
import argparse
import json
import os
import pathlib
import resource
import signal
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e" / "python"))
import llama_reference as ref  # noqa: E402


class Unavailable(Exception):
    """This side cannot run here; the message says why."""


def model_path(cache: pathlib.Path) -> pathlib.Path:
    shape = ref.ModelShape.one_billion()
    path = cache / (f"synthetic-llama-{shape.n_params() / 1e9:.2f}B-"
                    f"{shape.n_embd}x{shape.n_layer}-f32.gguf")
    if not path.exists():
        print(f"writing {path} ({shape.n_params() / 1e9:.2f} B parameters, "
              "f32) ...", flush=True)
        start = time.perf_counter()
        tmp = path.with_suffix(".partial")
        ref.write_streaming(shape, tmp, seed=1)
        tmp.rename(path)
        print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    return path


def is_pure(ftype):
    return ref.FTYPES[ftype][1] == ftype


def self_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def process_cpu_seconds(pid):
    """User + system CPU seconds of a running process, from /proc."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]
    utime, stime = fields.split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


def llama_cpp_side(src, ftype, out_dir, nthread, repeat=1):
    """Seconds of each llama_model_quantize run, and its output file."""
    if ref.llama_cpp is None:
        raise Unavailable("llama-cpp-python is not installed")
    out = out_dir / f"llama-cpp-{ftype}.gguf"
    times, cpu = [], []
    for _ in range(repeat):
        cpu0 = self_cpu_seconds()
        start = time.perf_counter()
        ref.quantize_with_llama_cpp(src, out, ftype, pure=is_pure(ftype),
                                    nthread=nthread)
        times.append(time.perf_counter() - start)
        cpu.append(self_cpu_seconds() - cpu0)
    return times, cpu, out


def llama_types(llama_out):
    """ggml type -> f32 bytes of the tensors llama.cpp quantized to it."""
    import gguf
    out = {}
    for t in gguf.GGUFReader(str(llama_out)).tensors:
        if t.tensor_type.name != "F32":
            out[t.tensor_type.name] = (out.get(t.tensor_type.name, 0)
                                       + int(t.n_elements) * 4)
    return out


def quantd_kernels_side(llama_out, bin_dir):
    """Seconds the kernels take for the model from quantd_kernels_bench's
    GB/s of each type."""
    bench = bin_dir / "bench" / "quantd_kernels_bench"
    if not bench.exists():
        raise Unavailable(f"{bench} not built")
    if llama_out is None:
        raise Unavailable("needs llama.cpp's output for the type mixture")
    seconds = 0.0
    for qtype, nbytes in llama_types(llama_out).items():
        r = subprocess.run(
            [str(bench), f"--benchmark_filter=BM_GgmlQuantize/{qtype}/fast$",
             "--benchmark_format=json"], capture_output=True, text=True,
            check=False)
        rows = json.loads(r.stdout or "{}").get("benchmarks", [])
        if r.returncode != 0 or not rows or "bytes_per_second" not in rows[0]:
            raise Unavailable(f"no kernels bench row for {qtype}")
        seconds += nbytes / rows[0]["bytes_per_second"]
    return seconds


def quantd_tool_side(src, llama_out, bin_dir, tmp_dir):
    """ggml_quantize_tool per tensor with llama.cpp's choice of type; returns
    (seconds, whether every tensor's bytes equal llama.cpp's)."""
    import gguf
    tool = bin_dir / "tests" / "kernels" / "ggml_quantize_tool"
    if not tool.exists():
        raise Unavailable(f"{tool} not built")
    if llama_out is None:
        raise Unavailable("needs llama.cpp's output for the type mixture")
    have = set(ref.quantd_tool_types(tool))
    src_tensors = {t.name: t for t in gguf.GGUFReader(str(src)).tensors}
    want = {t.name: t for t in gguf.GGUFReader(str(llama_out)).tensors}
    missing = sorted({t.tensor_type.name for t in want.values()
                      if t.tensor_type.name != "F32"} - have)
    if missing:
        raise Unavailable(f"type(s) {', '.join(missing)} not in quantd yet")
    seconds, identical = 0.0, True
    f32_path, out_path = tmp_dir / "tensor.f32", tmp_dir / "tensor.bin"
    for name, t in want.items():
        if t.tensor_type.name == "F32":
            continue
        x = np.asarray(src_tensors[name].data)
        x.tofile(f32_path)
        args = [str(tool), "quantize", t.tensor_type.name, str(x.shape[-1])]
        with open(f32_path, "rb") as f, open(out_path, "wb") as o:
            start = time.perf_counter()
            r = subprocess.run(args, stdin=f, stdout=o,
                               stderr=subprocess.PIPE, check=False)
            seconds += time.perf_counter() - start
        if r.returncode != 0:
            raise RuntimeError(f"{name}: {r.stderr.decode()}")
        identical &= out_path.read_bytes() == np.asarray(t.data).tobytes()
    f32_path.unlink(missing_ok=True)
    out_path.unlink(missing_ok=True)
    return seconds, identical


class LocalServer:
    """quantd on 127.0.0.1 with an ephemeral port (read from its log)."""

    def __init__(self, binary, workers=2):
        self.proc = subprocess.Popen(
            [str(binary), "--listen=127.0.0.1:0", "--metrics_listen=",
             f"--workers={workers}"],
            stderr=subprocess.PIPE, text=True)
        self.port = None
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("msg") == "serving":
                    self.port = entry["grpc_port"]
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(30) or self.port is None:
            self.stop()
            raise RuntimeError("quantd did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def quantd_grpc_side(src, ftype, out_dir, bin_dir, repeat=1, workers=2):
    """The whole client path: quantctl reads the GGUF, streams it through a
    local quantd and writes the quantized GGUF. Returns (seconds of each
    run, CPU seconds of each run (quantctl and quantd), the output file)."""
    quantctl = bin_dir / "client" / "quantctl"
    server = bin_dir / "server" / "quantd"
    for b in (quantctl, server):
        if not b.exists():
            raise Unavailable(f"{b} not built")
    usage = subprocess.run([str(quantctl), "--help"], capture_output=True,
                           text=True, check=False)
    if "--type" not in usage.stdout + usage.stderr:
        raise Unavailable("quantctl has no GGUF --type mode yet")
    out = out_dir / f"quantd-{ftype}.gguf"
    s = LocalServer(server, workers=workers)
    times, cpu = [], []
    try:
        for _ in range(repeat):
            out.unlink(missing_ok=True)
            args = [str(quantctl), "quantize", str(src), "--type", ftype,
                    "--out", str(out), "--server", f"127.0.0.1:{s.port}",
                    "--quiet"]
            if is_pure(ftype):
                args.append("--pure")
            cpu0 = children_cpu_seconds() + process_cpu_seconds(s.proc.pid)
            start = time.perf_counter()
            r = subprocess.run(args, capture_output=True, text=True,
                               check=False)
            times.append(time.perf_counter() - start)
            cpu.append(children_cpu_seconds()
                       + process_cpu_seconds(s.proc.pid) - cpu0)
            if r.returncode != 0:
                raise RuntimeError(f"quantctl: {r.stderr}")
    finally:
        s.stop()
    return times, cpu, out


def same_tensors(a, b) -> bool:
    import gguf
    ta = {t.name: t for t in gguf.GGUFReader(str(a)).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(str(b)).tensors}
    return ta.keys() == tb.keys() and all(
        ta[n].tensor_type == tb[n].tensor_type
        and np.array_equal(np.asarray(ta[n].data), np.asarray(tb[n].data))
        for n in ta)


def median(values):
    return float(np.median(values))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cache", type=pathlib.Path)
    p.add_argument("--bin-dir", type=pathlib.Path, default=ROOT / "build")
    p.add_argument("--types", default="Q8_0,Q4_0,Q4_K_M")
    p.add_argument("--nthread", type=int, default=2,
                   help="llama.cpp's quantize threads (default 2)")
    p.add_argument("--sides", default="llama,kernels,tool,grpc",
                   help="which sides to run (default: all)")
    p.add_argument("--repeat", type=int, default=1,
                   help="timed runs of llama.cpp and gRPC; median reported")
    p.add_argument("--out-dir", type=pathlib.Path, default=None,
                   help="where both sides write their outputs (default: the "
                   "cache folder); a tmpfs such as /dev/shm takes the disk "
                   "out of the comparison")
    p.add_argument("--workers", type=int, default=2,
                   help="quantd's --workers for the gRPC side (default 2)")
    args = p.parse_args()
    sides = set(args.sides.split(","))
    args.cache.mkdir(parents=True, exist_ok=True)
    out_dir = args.out_dir or args.cache
    out_dir.mkdir(parents=True, exist_ok=True)
    if ref.llama_cpp is not None:
        ref.quiet_llama_cpp()
    src = model_path(args.cache)
    f32_bytes = sum(int(t.n_bytes) for t in
                    __import__("gguf").GGUFReader(str(src)).tensors)
    print(f"model: {src.name}, {f32_bytes / 1e9:.2f} GB of f32 tensors")

    rows = []
    runs = f", median of {args.repeat}" if args.repeat > 1 else ""
    for ftype in args.types.split(","):
        base, llama_out = None, None
        if "llama" in sides:
            try:
                times, cpu, llama_out = llama_cpp_side(
                    src, ftype, out_dir, args.nthread, args.repeat)
                base = median(times)
                rows.append((ftype, f"llama.cpp, {args.nthread} threads", base,
                             median(cpu), None, "reference" + runs + ": " +
                             " ".join(f"{t:.2f}" for t in times)))
            except Unavailable as e:
                rows.append((ftype, "llama.cpp", None, None, None, str(e)))
        elif (out_dir / f"llama-cpp-{ftype}.gguf").exists():
            llama_out = out_dir / f"llama-cpp-{ftype}.gguf"
        if "kernels" in sides:
            try:
                seconds = quantd_kernels_side(llama_out, args.bin_dir)
                rows.append((ftype, "quantd kernels only, 1 thread", seconds,
                             seconds, base, "from quantd_kernels_bench GB/s"))
            except Unavailable as e:
                rows.append((ftype, "quantd kernels only, 1 thread", None,
                             None, None, str(e)))
        if "tool" in sides:
            try:
                seconds, identical = quantd_tool_side(src, llama_out,
                                                      args.bin_dir, out_dir)
                rows.append((ftype, "quantd ggml_quantize_tool, 1 thread",
                             seconds, None, base, "bytes identical"
                             if identical else "BYTES DIFFER"))
            except Unavailable as e:
                rows.append((ftype, "quantd ggml_quantize_tool, 1 thread",
                             None, None, None, str(e)))
        if "grpc" in sides:
            side = f"quantd gRPC (quantctl, {args.workers} workers)"
            try:
                times, cpu, out = quantd_grpc_side(src, ftype, out_dir,
                                                   args.bin_dir, args.repeat,
                                                   args.workers)
                if llama_out is None:
                    check = "no llama.cpp file to compare"
                elif same_tensors(out, llama_out):
                    check = "bytes identical"
                else:
                    check = "BYTES DIFFER"
                rows.append((ftype, side, median(times), median(cpu), base,
                             check + runs + ": " + " ".join(
                                 f"{t:.2f}" for t in times)))
            except Unavailable as e:
                rows.append((ftype, side, None, None, None, str(e)))

    print("\nfiles: " + ", ".join(
        f"{f} {'pure' if is_pure(f) else 'mixture'}"
        for f in args.types.split(",")))
    print(f"\n{'type':<8} {'implementation':<36} {'seconds':>8} "
          f"{'GB/s f32':>9} {'vs llama.cpp':>12} {'CPU s':>7}  note")
    for ftype, side, seconds, cpu, base, note in rows:
        if seconds is None:
            print(f"{ftype:<8} {side:<36} {'-':>8} {'-':>9} {'-':>12} "
                  f"{'-':>7}  {note}")
            continue
        ratio = f"{base / seconds:.2f}x" if base else (
            "1.00x" if side.startswith("llama.cpp") else "-")
        cpu_text = "-" if cpu is None else f"{cpu:.2f}"
        print(f"{ftype:<8} {side:<36} {seconds:8.2f} "
              f"{f32_bytes / seconds / 1e9:9.2f} {ratio:>12} {cpu_text:>7}  "
              f"{note}")
    print("\nvs llama.cpp: llama.cpp's time / this time (above 1 = faster)."
          "\nCPU s: user + system CPU seconds of the run (llama.cpp: this "
          "process;\ngRPC: quantctl and quantd together).")


if __name__ == "__main__":
    main()
