#!/usr/bin/env python3
"""Side-by-side CPU benchmark of BLIP-2's Q-Former: PyTorch fp32, ONNX Runtime fp32 and dynamic
int8, and qformer f32 / fp16 / int8 blobs; same weights, same input for everybody.

Usage:  python3 tools/bench/compare.py [--quick] [--rounds R] [--workdir DIR] [--threads 1,4]

Model: the BLIP-2-sized Q-Former (12 layers, d 768, 12 heads, ffn 3072, cross-attention every
2nd layer, 32 queries, 257 x 1408 image features, projection 2560), with the deterministic
weights of `qformer synth` (Hugging Face layout and initialisation).

Steps:
  1. `cargo build --release --bin qformer --bin quantize` (once), then in the work directory
     (a temporary directory unless --workdir; never inside the repository):
     `qformer synth ckpt/` -> config.json, model.safetensors, input.safetensors;
     `quantize ckpt -o {f32,fp16,int8}.qfb --dtype D -q`;
     transformers' Blip2QFormerModel (+ torch.nn.Linear for language_projection) loaded from
     model.safetensors (strict); exported to ONNX (TorchScript exporter, dynamo=False, opset 17,
     eager attention, query tokens baked in: the graph's only input is image_embeds) and
     quantized with onnxruntime.quantization.quantize_dynamic(per_channel=True, QInt8).
  2. Accuracy: every system's `qformer_output` [1, 32, 768] against PyTorch fp32 (cosine,
     computed in float64); qformer's through `qformer run`.
  3. Timing: six systems x thread counts (1 and os.cpu_count()), round-robin over several
     rounds (system order rotated every round), each measurement a fresh process: W untimed
     warm-up runs, then K timed runs. PyTorch: torch.set_num_threads(N),
     set_num_interop_threads(1); ORT: intra_op_num_threads=N, inter_op_num_threads=1,
     sequential; qformer: `qformer bench X.qfb --threads N --json`. Every system computes the
     Q-Former and the projection for one image. Peak RSS: VmHWM of the measuring process
     (qformer reports its own).
  4. One markdown table: median ms (median over rounds of each run's median of K timed runs),
     ratio to ORT int8 at the same thread count, cosine, model bytes, peak RSS.

Before the timing runs the script can wait for a quiet machine (--max-load, --max-wait).
Exit codes: 0 success, 1 a step failed (message on stderr), 2 usage.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
HERE = os.path.abspath(__file__)

SYSTEMS = ["pytorch-fp32", "ort-fp32", "ort-int8", "qformer-f32", "qformer-fp16", "qformer-int8"]
LABEL = {
    "pytorch-fp32": "PyTorch fp32",
    "ort-fp32": "ORT fp32",
    "ort-int8": "ORT int8 (dynamic)",
    "qformer-f32": "qformer f32",
    "qformer-fp16": "qformer fp16",
    "qformer-int8": "qformer int8",
}
BLOB_DTYPES = {"qformer-f32": "f32", "qformer-fp16": "fp16", "qformer-int8": "int8"}


class StepError(Exception):
    """A step failed; the message says which and why."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_cmd(cmd, what, cwd=None, env=None, timeout=None):
    """Runs cmd, returns stdout; raises StepError with its stderr/stdout tail on failure."""
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise StepError(f"{what}: cannot run {cmd[0]!r}: {e}") from None
    except subprocess.TimeoutExpired:
        raise StepError(f"{what}: timed out after {timeout} s: {' '.join(map(str, cmd))}") from None
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout or "").strip().splitlines()[-25:])
        raise StepError(f"{what} failed (exit {p.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return p.stdout


def last_json_line(text, what):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError as e:
                raise StepError(f"{what}: bad JSON line {line!r}: {e}") from None
    raise StepError(f"{what}: no JSON line in its output:\n{text[-2000:]}")


def peak_rss_self():
    """Peak resident set of this process in bytes (VmHWM), or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def ensure_python_packages():
    """onnx / onnxruntime are optional in the environment; install them with pip if missing."""
    missing = []
    for mod, pkg in (("onnx", "onnx"), ("onnxruntime", "onnxruntime")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(pkg)
    if missing:
        log(f"installing {' '.join(missing)} with pip")
        run_cmd([sys.executable, "-m", "pip", "install", "--quiet", *missing], "pip install")
    for mod in ("torch", "transformers", "safetensors", "numpy", "onnx", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError as e:
            raise StepError(f"python package {mod!r} is not importable: {e}") from None


# ----------------------------------------------------------------------------------------------
# models on the Python side (imported lazily: the ORT worker must not pay for importing torch)


def load_torch_model(ckpt_dir, attn):
    """(Blip2QFormerModel + nn.Linear projection + query tokens) wrapped as image_embeds ->
    (qformer_output, projected), weights from the checkpoint (strict)."""
    import torch
    from safetensors.torch import load_file
    from transformers import Blip2QFormerConfig, Blip2QFormerModel

    with open(os.path.join(ckpt_dir, "config.json")) as fh:
        cfg = json.load(fh)
    qc = {k: v for k, v in cfg["qformer_config"].items() if k != "model_type"}
    qcfg = Blip2QFormerConfig(**qc)
    qcfg._attn_implementation = attn
    state = load_file(os.path.join(ckpt_dir, "model.safetensors"))
    qf = {k[len("qformer."):]: v.float() for k, v in state.items() if k.startswith("qformer.")}
    with torch.device("meta"):
        qformer = Blip2QFormerModel(qcfg)
    qformer.load_state_dict(qf, strict=True, assign=True)
    qformer = qformer.float().eval()
    pw, pb = state["language_projection.weight"].float(), state["language_projection.bias"].float()
    proj = torch.nn.Linear(pw.shape[1], pw.shape[0])
    proj.load_state_dict({"weight": pw, "bias": pb}, strict=True)
    unused = [k for k in state if not (k.startswith("qformer.") or k.startswith("language_projection.")
                                       or k == "query_tokens")]
    if unused:
        raise StepError(f"unexpected tensors in model.safetensors: {unused[:5]}")

    class QFormerWithProjection(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qformer = qformer
            self.proj = proj
            self.query_tokens = torch.nn.Parameter(state["query_tokens"].float(), requires_grad=False)

        def forward(self, image_embeds):
            q = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
            out = self.qformer(query_embeds=q, encoder_hidden_states=image_embeds,
                               return_dict=True).last_hidden_state
            return out, self.proj(out)

    return QFormerWithProjection().eval()


def load_input_numpy(path):
    from safetensors.numpy import load_file
    x = load_file(path)
    if "image_embeds" not in x:
        raise StepError(f"{path} has no image_embeds tensor (has {sorted(x)})")
    return x["image_embeds"].astype("float32")


def ort_session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def cosine(a, b):
    import numpy as np
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise StepError(f"cosine of different sizes {a.shape} vs {b.shape}")
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ----------------------------------------------------------------------------------------------
# worker: one timing measurement in a fresh process, prints one JSON line


def worker(args):
    t_start = time.perf_counter()
    n = args.threads_n
    ckpt = os.path.join(args.workdir, "ckpt")
    x = load_input_numpy(os.path.join(ckpt, "input.safetensors"))
    if args.worker == "pytorch-fp32":
        import torch
        torch.set_num_threads(n)
        torch.set_num_interop_threads(1)
        model = load_torch_model(ckpt, "sdpa")
        xt = torch.from_numpy(x)

        def step():
            with torch.inference_mode():
                return model(xt)
    elif args.worker in ("ort-fp32", "ort-int8"):
        path = os.path.join(args.workdir, "onnx", "qformer.onnx" if args.worker == "ort-fp32"
                            else "qformer.int8.onnx")
        sess = ort_session(path, n)
        feeds = {"image_embeds": x}

        def step():
            return sess.run(None, feeds)
    else:
        raise StepError(f"unknown worker system {args.worker!r}")
    load_s = time.perf_counter() - t_start
    for _ in range(args.warmup):
        step()
    ms = []
    for _ in range(args.iters):
        t = time.perf_counter()
        step()
        ms.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({"system": args.worker, "threads": n, "times_ms": ms,
                      "median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
                      "peak_rss_bytes": peak_rss_self(), "load_s": load_s}), flush=True)


# ----------------------------------------------------------------------------------------------
# setup: build, synth, quantize, export, accuracy


def cargo_build():
    log("cargo build --release --bin qformer --bin quantize")
    out = run_cmd(["cargo", "build", "--release", "--bin", "qformer", "--bin", "quantize",
                   "--message-format=json-render-diagnostics"], "cargo build", cwd=REPO)
    exes = {}
    for line in out.splitlines():
        try:
            m = json.loads(line)
        except json.JSONDecodeError:
            continue
        if m.get("reason") == "compiler-artifact" and m.get("executable"):
            exes[m["target"]["name"]] = m["executable"]
    for name in ("qformer", "quantize"):
        if name not in exes or not os.path.exists(exes[name]):
            raise StepError(f"cargo build did not report the {name} executable")
    return exes


def setup(args, exes, info):
    import numpy as np
    import torch
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.set_num_threads(os.cpu_count() or 1)
    wd = args.workdir
    ckpt = os.path.join(wd, "ckpt")
    synth = [exes["qformer"], "synth", ckpt, "--seed", str(args.seed)]
    if args.outliers:
        synth += ["--outliers", args.outliers]
    log(" ".join(synth[1:]))
    run_cmd(synth, "qformer synth")
    inp = os.path.join(ckpt, "input.safetensors")
    x = load_input_numpy(inp)
    if x.shape != (1, 257, 1408):
        raise StepError(f"input.safetensors image_embeds is {x.shape}, expected (1, 257, 1408)")

    sizes = {"pytorch-fp32": os.path.getsize(os.path.join(ckpt, "model.safetensors"))}
    for s, dt in BLOB_DTYPES.items():
        blob = os.path.join(wd, f"{dt}.qfb")
        log(f"quantize --dtype {dt}")
        run_cmd([exes["quantize"], ckpt, "-o", blob, "--dtype", dt, "-q"], f"quantize --dtype {dt}")
        sizes[s] = os.path.getsize(blob)

    log("PyTorch fp32 reference (transformers Blip2QFormerModel, sdpa attention)")
    model = load_torch_model(ckpt, "sdpa")
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        ref, ref_proj = (t.numpy().copy() for t in model(xt))
    if ref.shape != (1, 32, 768) or ref_proj.shape != (1, 32, 2560):
        raise StepError(f"unexpected PyTorch output shapes {ref.shape} {ref_proj.shape}")
    outputs = {"pytorch-fp32": (ref, ref_proj)}
    del model

    onnx_dir = os.path.join(wd, "onnx")
    os.makedirs(onnx_dir, exist_ok=True)
    f32, i8 = os.path.join(onnx_dir, "qformer.onnx"), os.path.join(onnx_dir, "qformer.int8.onnx")
    log("torch.onnx.export (dynamo=False, opset 17, eager attention)")
    export_model = load_torch_model(ckpt, "eager")
    with torch.inference_mode():
        eager = export_model(xt)[0].numpy()
    info["pytorch_eager_vs_sdpa_cosine"] = cosine(eager, ref)
    try:
        import warnings
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(export_model, (xt,), f32, dynamo=False, opset_version=17,
                              input_names=["image_embeds"],
                              output_names=["qformer_output", "projected"],
                              do_constant_folding=True)
        onnx.checker.check_model(f32)
    except Exception as e:  # noqa: BLE001 - any exporter failure is reported as this step's
        raise StepError(f"ONNX export failed: {type(e).__name__}: {e}") from None
    del export_model
    log("onnxruntime.quantization.quantize_dynamic (per_channel, QInt8 weights)")
    try:
        quantize_dynamic(f32, i8, per_channel=True, weight_type=QuantType.QInt8)
    except Exception as e:  # noqa: BLE001
        raise StepError(f"quantize_dynamic failed: {type(e).__name__}: {e}") from None
    ops = {}
    for node in onnx.load(i8, load_external_data=False).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    info["ort_int8_ops"] = {k: ops.get(k, 0) for k in
                            ("MatMulInteger", "DynamicQuantizeLinear", "MatMul", "Gemm")}
    for s, path in (("ort-fp32", f32), ("ort-int8", i8)):
        sizes[s] = os.path.getsize(path)
        sess = ort_session(path, os.cpu_count() or 1)
        outputs[s] = tuple(sess.run(None, {"image_embeds": x}))
        del sess

    from safetensors.numpy import load_file
    for s, dt in BLOB_DTYPES.items():
        out = os.path.join(wd, f"out-{dt}.safetensors")
        log(f"qformer run {dt}.qfb")
        run_cmd([exes["qformer"], "run", os.path.join(wd, f"{dt}.qfb"), "--input", inp,
                 "--output", out], f"qformer run {dt}.qfb")
        o = load_file(out)
        outputs[s] = (o["qformer_output"], o.get("projected"))

    acc = {}
    for s in SYSTEMS:
        o, p = outputs[s]
        acc[s] = {"cosine": cosine(o, ref), "max_abs": float(np.abs(np.asarray(o) - ref).max()),
                  "cosine_projected": cosine(p, ref_proj) if p is not None else None}
    return sizes, acc


# ----------------------------------------------------------------------------------------------
# timing


def loadavg():
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def wait_quiet(max_load, max_wait, poll=60):
    """Waits (polling every `poll` s, at most max_wait s) until the 1-minute load average is
    below max_load. Returns (load, waited_s, quiet)."""
    t0 = time.time()
    while True:
        la = loadavg()
        if la < max_load:
            return la, time.time() - t0, True
        waited = time.time() - t0
        if waited >= max_wait:
            return la, waited, False
        log(f"load average {la:.2f} >= {max_load}: waiting ({waited:.0f}/{max_wait} s)")
        time.sleep(min(poll, max_wait - waited))


def measure(system, n, args, exes):
    what = f"{system} at {n} thread(s)"
    if system in BLOB_DTYPES:
        dt = BLOB_DTYPES[system]
        out = run_cmd([exes["qformer"], "bench", os.path.join(args.workdir, f"{dt}.qfb"),
                       "--input", os.path.join(args.workdir, "ckpt", "input.safetensors"),
                       "--threads", str(n), "--warmup", str(args.warmup), "--iters", str(args.iters),
                       "--json"], what, timeout=args.timeout)
        r = last_json_line(out, what)
        if r.get("threads") != n:
            raise StepError(f"{what}: qformer bench reports {r.get('threads')} threads")
        return r
    env = dict(os.environ, OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n),
               OPENBLAS_NUM_THREADS=str(n), TOKENIZERS_PARALLELISM="false")
    out = run_cmd([sys.executable, HERE, "--worker", system, "--threads-n", str(n),
                   "--workdir", args.workdir, "--warmup", str(args.warmup), "--iters", str(args.iters)],
                  what, env=env, timeout=args.timeout)
    return last_json_line(out, what)


def timing(args, exes, thread_counts):
    runs = {(s, n): [] for s in SYSTEMS for n in thread_counts}
    total = args.rounds * len(thread_counts) * len(SYSTEMS)
    k = 0
    for r in range(args.rounds):
        order = SYSTEMS[r % len(SYSTEMS):] + SYSTEMS[:r % len(SYSTEMS)]
        for n in (thread_counts if r % 2 == 0 else thread_counts[::-1]):
            for s in order:
                k += 1
                res = measure(s, n, args, exes)
                runs[(s, n)].append(res)
                log(f"[{k}/{total}] round {r + 1} {s:13s} {n} thr: median {res['median_ms']:8.2f} ms "
                    f"(min {res['min_ms']:.2f}, max {res['max_ms']:.2f})")
    return runs


# ----------------------------------------------------------------------------------------------
# report


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions():
    import numpy
    import onnx
    import onnxruntime
    import torch
    import transformers
    v = {"python": platform.python_version(), "torch": torch.__version__,
         "transformers": transformers.__version__, "onnx": onnx.__version__,
         "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__}
    try:
        v["rustc"] = run_cmd(["rustc", "--version"], "rustc --version", cwd=REPO).strip()
    except StepError:
        v["rustc"] = "?"
    try:
        head = run_cmd(["git", "rev-parse", "--short", "HEAD"], "git", cwd=REPO).strip()
        dirty = run_cmd(["git", "status", "--porcelain", "--untracked-files=no"], "git", cwd=REPO).strip()
        v["qformer"] = head + ("+dirty" if dirty else "")
    except StepError:
        v["qformer"] = "?"
    return v


def report(args, runs, thread_counts, sizes, acc, info):
    med = {}
    for key, rs in runs.items():
        med[key] = statistics.median(r["median_ms"] for r in rs)
    lines = []
    lines.append(f"Q-Former benchmark, {info['date']}, {info['cpu']} ({os.cpu_count()} logical CPUs), "
                 f"{platform.system()} {platform.release()} {platform.machine()}")
    v = info["versions"]
    lines.append(f"versions: qformer {v['qformer']} ({v['rustc']}), torch {v['torch']}, "
                 f"transformers {v['transformers']}, onnxruntime {v['onnxruntime']}, onnx {v['onnx']}, "
                 f"numpy {v['numpy']}, python {v['python']}")
    k = info.get("kernels", {})
    lines.append(f"model: BLIP-2 Q-Former (12 x 768, 12 heads, ffn 3072, cross-attn every 2nd layer, "
                 f"32 queries, 1 image of 257 x 1408, projection 2560), `qformer synth --seed {args.seed}`"
                 + (f" --outliers {args.outliers}" if args.outliers else "")
                 + f"; qformer kernels: int8 {k.get('q8', '?')}, float {k.get('f', '?')}")
    lines.append(f"timing: {args.rounds} rounds, round-robin, each a fresh process with {args.warmup} warm-up "
                 f"+ {args.iters} timed runs; median ms = median over rounds of each run's median; "
                 f"load average before timing {info['load_before']:.2f} (after {info['load_after']:.2f})"
                 + ("" if info["quiet"] else " -- MACHINE WAS NOT QUIET"))
    lines.append("")
    lines.append("| system | threads | median ms | x ORT int8 | cosine vs PyTorch fp32 | model bytes | peak RSS MiB |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for n in thread_counts:
        base = med[("ort-int8", n)]
        for s in SYSTEMS:
            m = med[(s, n)]
            rss = [r.get("peak_rss_bytes") for r in runs[(s, n)] if r.get("peak_rss_bytes")]
            rss_s = f"{max(rss) / 2**20:.0f}" if rss else "?"
            lines.append(f"| {LABEL[s]} | {n} | {m:.1f} | {m / base:.2f} | {acc[s]['cosine']:.6f} | "
                         f"{sizes[s]:,} | {rss_s} |")
    lines.append("")
    lines.append("Model bytes: PyTorch = model.safetensors (fp32, Q-Former + query tokens + projection); "
                 "ORT = .onnx file; qformer = blob. Peak RSS: VmHWM of the measuring process, max over "
                 "rounds (qformer memory-maps its blob; PyTorch includes importing torch + transformers).")
    ops = info.get("ort_int8_ops")
    if ops:
        lines.append(f"ORT int8 graph ops: {ops}; PyTorch eager vs sdpa cosine "
                     f"{info['pytorch_eager_vs_sdpa_cosine']:.7f}.")
    return "\n".join(lines), med


# ----------------------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, help="timing rounds (default 5; 2 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 rounds, 1 warm-up + 3 timed runs")
    ap.add_argument("--warmup", type=int, help="untimed runs per measurement (default 2; 1 with --quick)")
    ap.add_argument("--iters", type=int, help="timed runs per measurement (default 10; 3 with --quick)")
    ap.add_argument("--threads", help="comma-separated thread counts (default 1 and os.cpu_count())")
    ap.add_argument("--workdir", help="where checkpoint, ONNX files and blobs go (default: a temporary "
                    "directory, deleted at the end); must be outside the repository; kept if given")
    ap.add_argument("--seed", type=int, default=11, help="qformer synth --seed (default 11)")
    ap.add_argument("--outliers", default="", help="qformer synth --outliers, e.g. 5,300,1001 (default none)")
    ap.add_argument("--max-load", type=float, default=0.8,
                    help="wait before timing until the 1-minute load average is below this (default 0.8)")
    ap.add_argument("--max-wait", type=float, default=0,
                    help="wait at most this many seconds for --max-load, polling every 60 s; then run "
                         "anyway and say so in the report (default 0: do not wait)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per measurement process")
    ap.add_argument("--json-out", help="also write all raw results to this JSON file")
    # internal: one measurement in a fresh process
    ap.add_argument("--worker", choices=["pytorch-fp32", "ort-fp32", "ort-int8"], help=argparse.SUPPRESS)
    ap.add_argument("--threads-n", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.rounds is None:
        a.rounds = 2 if a.quick else 5
    if a.warmup is None:
        a.warmup = 1 if a.quick else 2
    if a.iters is None:
        a.iters = 3 if a.quick else 10
    if a.rounds < 1 or a.iters < 1 or a.warmup < 0:
        ap.error("--rounds and --iters must be >= 1, --warmup >= 0")
    return a, ap


def inside_repo(path):
    p = os.path.realpath(path)
    return p == REPO or p.startswith(REPO + os.sep)


def main(argv=None):
    args, ap = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        if not args.workdir or not args.threads_n:
            ap.error("--worker needs --workdir and --threads-n")
        worker(args)
        return 0

    ncpu = os.cpu_count() or 1
    try:
        thread_counts = sorted({int(t) for t in args.threads.split(",")}) if args.threads \
            else sorted({1, ncpu})
    except ValueError:
        ap.error(f"--threads {args.threads!r}: expected comma-separated integers")
    if not thread_counts or min(thread_counts) < 1:
        ap.error("--threads: thread counts must be >= 1")

    t0 = time.time()
    temp = args.workdir is None
    if temp:
        args.workdir = tempfile.mkdtemp(prefix="qformer-bench-")
    else:
        if inside_repo(args.workdir):
            ap.error(f"--workdir {args.workdir} is inside the repository {REPO}; use a directory outside it")
        os.makedirs(args.workdir, exist_ok=True)
    args.workdir = os.path.abspath(args.workdir)
    log(f"work directory {args.workdir}" + (" (temporary)" if temp else ""))
    try:
        ensure_python_packages()
        info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "cpu": cpu_model(), "versions": versions()}
        exes = cargo_build()
        sizes, acc = setup(args, exes, info)
        for s in SYSTEMS:
            a = acc[s]
            log(f"accuracy {s:13s} cosine {a['cosine']:.7f}  max|err| {a['max_abs']:.3e}  "
                f"projected cosine {a['cosine_projected']}")
        la, waited, quiet = wait_quiet(args.max_load, args.max_wait)
        info.update(load_before=la, waited_s=waited, quiet=quiet)
        if not quiet:
            log(f"WARNING: load average {la:.2f} >= {args.max_load} after waiting {waited:.0f} s; "
                "timing anyway (results may be disturbed)")
        t_timing = time.time()
        runs = timing(args, exes, thread_counts)
        info["timing_s"] = time.time() - t_timing
        info["load_after"] = loadavg()
        q = next((r for rs in runs.values() for r in rs if "q8_kernel" in r), {})
        info["kernels"] = {"q8": q.get("q8_kernel"), "f": q.get("float_kernel")}
        table, med = report(args, runs, thread_counts, sizes, acc, info)
        info["total_s"] = time.time() - t0
        print(table)
        print(f"\n(total {info['total_s']:.0f} s, of which timing {info['timing_s']:.0f} s; "
              f"waited {info['waited_s']:.0f} s for a quiet machine)")
        if args.json_out:
            raw = {"info": info, "args": {k: v for k, v in vars(args).items() if k not in ("worker", "threads_n")},
                   "sizes": sizes, "accuracy": acc,
                   "median_ms": {f"{s}@{n}": m for (s, n), m in med.items()},
                   "runs": {f"{s}@{n}": rs for (s, n), rs in runs.items()}}
            with open(args.json_out, "w") as fh:
                json.dump(raw, fh, indent=1)
            log(f"raw results in {args.json_out}")
    except StepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    finally:
        if temp:
            shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
