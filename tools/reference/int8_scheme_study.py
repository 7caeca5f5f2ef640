#!/usr/bin/env python3
"""Numpy simulation of candidate int8 schemes for the Q-Former, on the trained fixture.

Usage:  python3 tools/reference/int8_scheme_study.py [--case DIR]
        (default DIR: tests/fixtures/trained_minilm, made by tools/reference/make_trained.py)

Scheme (group size G in {per-channel, 128, 64, 32, 16}; "per-channel" = one group spanning the
whole contraction axis):
  * linear y = x W^T + b: W [out, in] symmetric int8, one scale per output row per group of G
    input channels; x dynamically quantized per token, one scale per group of G channels (same G).
    y = sum_g s_x[t,g] s_w[o,g] sum_{i in g} xq[t,i] wq[o,i] + b.
  * attention, per head: q.k^T with q per (query token, head) in groups of G along the head dim and
    k per (key token, head) in groups of G along the head dim; p.v with p per query row in groups
    of G along the keys and v per (head channel) in groups of G along the keys (v transposed).
    The 1/sqrt(d_head) scale is applied to the dequantised scores.
  * scale = max|x| / 127 per group (a zero group stays zero), q = round half away from zero,
    so |q| <= 127. LayerNorm, softmax, GELU, residuals and biases in float.
Since every group's integer dot product is exact, quantise->dequantise ("fake quant") followed by
a float64 matmul gives the same numbers as the integer kernel up to float64 rounding; that is how
it is simulated (everything else in float64 too, so the only error is the quantisation).

Reference = the float64 forward with the checkpoint's f16-rounded weights (agrees with the golden
fp32 `qformer_output` to ~1e-6). Metrics on the final output [B, N, d]: cosine over the whole
flattened tensor (and 1 - cos), the worst per-token cosine, relative L2 error, max abs error.

Also printed: the per-linear breakdown (quantise ONE linear or ONE attention product at a time,
everything else float) for G=32 and per-channel, split into weights-only / activations-only /
both; two alternatives at G=32 ((a) attention products in float, (b) P with a fixed per-row scale
1/127); and two baselines (per-tensor symmetric activations; an ONNX-Runtime-dynamic-like scheme:
per-channel int8 weights, per-tensor asymmetric uint8 activations, attention in float); and
mixed precision (the most sensitive linears in fp16, added until 1-cos < 1e-3) with the floor
that int8 attention products alone leave; with --outliers, the runtime's outlier decomposition
with the outlier channels' weight columns in int8 or fp16.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PC = None  # "per-channel": one group spanning the whole contraction axis

try:
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover
    _erf = np.vectorize(math.erf, otypes=[np.float64])


# ----------------------------------------------------------------------------------------------
# quantisers


def round_half_away(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def fq(x, G, axis=-1):
    """Symmetric int8 fake-quant of x along `axis` in groups of G (G=None: whole axis)."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    n = x.shape[-1]
    g = n if G is None or G >= n else G
    pad = (-n) % g
    if pad:
        x = np.concatenate([x, np.zeros(x.shape[:-1] + (pad,))], -1)
    xs = x.reshape(x.shape[:-1] + (x.shape[-1] // g, g))
    s = np.abs(xs).max(-1, keepdims=True) / 127.0
    q = round_half_away(np.divide(xs, s, out=np.zeros_like(xs), where=s > 0))
    assert np.abs(q).max() <= 127
    y = (q * s).reshape(x.shape)[..., :n]
    return np.moveaxis(y, -1, axis)


def fq_fixed(x, scale):
    """Symmetric int8 with a fixed scale (for P in [0, 1]: scale 1/127)."""
    q = np.clip(round_half_away(x / scale), -127, 127)
    return q * scale


def fq_tensor_sym(x):
    s = np.abs(x).max() / 127.0
    return round_half_away(x / s) * s if s > 0 else x * 0


def fq_tensor_u8_asym(x):
    """ONNX DynamicQuantizeLinear: per-tensor uint8, range forced to include 0, round half even."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    s = (hi - lo) / 255.0
    if s == 0:
        return x * 0
    zp = np.clip(np.round(-lo / s), 0, 255)
    q = np.clip(np.round(x / s) + zp, 0, 255)
    return (q - zp) * s


# ----------------------------------------------------------------------------------------------
# model


def load_case(case):
    cfg = json.load(open(os.path.join(case, "config.json")))
    q = cfg["qformer_config"]
    ck = {k: v.astype(np.float64) for k, v in load_file(os.path.join(case, "model.safetensors")).items()}
    io = load_file(os.path.join(case, "io.safetensors"))
    global ACT
    ACT = q.get("hidden_act", "gelu")
    assert ACT in ("gelu", "gelu_pytorch_tanh", "relu"), ACT
    return dict(L=q["num_hidden_layers"], d=q["hidden_size"], H=q["num_attention_heads"],
                f=q["cross_attention_frequency"], eps=q["layer_norm_eps"]), ck, io


def ln(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def softmax(s):
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


ACT = "gelu"


def gelu(x):
    """The case's feed-forward activation (gelu, gelu_pytorch_tanh or relu)."""
    if ACT == "relu":
        return np.maximum(x, 0.0)
    if ACT == "gelu_pytorch_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def linear_names(m):
    out = []
    for l in range(m["L"]):
        for kind in ["self"] + (["cross"] if l % m["f"] == 0 else []):
            for p in ("q", "k", "v", "o"):
                out.append(f"L{l}.{kind}.{p}")
        out += [f"L{l}.ffn.up", f"L{l}.ffn.down"]
    return out


def attn_names(m):
    out = []
    for l in range(m["L"]):
        for kind in ["self"] + (["cross"] if l % m["f"] == 0 else []):
            out += [f"L{l}.{kind}.qk", f"L{l}.{kind}.pv"]
    return out


class Policy:
    """What to quantise. lin[name] = (wq, aq) quantiser callables or None; att[name] = dict."""

    def __init__(self, lin=None, att=None):
        self.lin, self.att = lin or {}, att or {}


def scheme(m, G, linears=True, attention=True, p_fixed=False):
    lin, att = {}, {}
    if linears:
        for n in linear_names(m):
            lin[n] = (lambda w, G=G: fq(w, G, -1), lambda x, G=G: fq(x, G, -1))
    if attention:
        for n in attn_names(m):
            if n.endswith(".qk"):
                att[n] = (lambda q, G=G: fq(q, G, -1), lambda k, G=G: fq(k, G, -1))
            else:
                pq = (lambda p: fq_fixed(p, 1.0 / 127.0)) if p_fixed else (lambda p, G=G: fq(p, G, -1))
                att[n] = (pq, lambda v, G=G: fq(v, G, -2))
    return Policy(lin, att)


def forward(m, ck, Z, pol, trace=None):
    d, H = m["d"], m["H"]
    hs = d // H
    g = lambda k: ck[k]  # noqa: E731
    B = Z.shape[0]

    def lin(x, pre, name):
        w, b = g(pre + ".weight"), g(pre + ".bias")
        if trace is not None:
            trace[name] = x
        if name in pol.lin:
            wq, aq = pol.lin[name]
            w = wq(w) if wq else w
            x = aq(x) if aq else x
        return x @ w.T + b

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], H, hs).transpose(0, 2, 1, 3)

    def attn(X, S, pre, tag):
        q = split(lin(X, pre + ".query", tag + ".q"))
        k = split(lin(S, pre + ".key", tag + ".k"))
        v = split(lin(S, pre + ".value", tag + ".v"))
        if tag + ".qk" in pol.att:
            qa, ka = pol.att[tag + ".qk"]
            q, k = (qa(q) if qa else q), (ka(k) if ka else k)
        p = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs))
        if tag + ".pv" in pol.att:
            pa, va = pol.att[tag + ".pv"]
            p, v = (pa(p) if pa else p), (va(v) if va else v)
        return (p @ v).transpose(0, 2, 1, 3).reshape(X.shape[0], X.shape[1], d)

    Q = np.broadcast_to(g("query_tokens"), (B,) + g("query_tokens").shape[1:])
    X = ln(Q, g("qformer.layernorm.weight"), g("qformer.layernorm.bias"), m["eps"])
    for l in range(m["L"]):
        p = f"qformer.encoder.layer.{l}."
        o = attn(X, X, p + "attention.attention", f"L{l}.self")
        X = ln(X + lin(o, p + "attention.output.dense", f"L{l}.self.o"),
               g(p + "attention.output.LayerNorm.weight"), g(p + "attention.output.LayerNorm.bias"),
               m["eps"])
        if l % m["f"] == 0:
            o = attn(X, Z, p + "crossattention.attention", f"L{l}.cross")
            X = ln(X + lin(o, p + "crossattention.output.dense", f"L{l}.cross.o"),
                   g(p + "crossattention.output.LayerNorm.weight"),
                   g(p + "crossattention.output.LayerNorm.bias"), m["eps"])
        h = gelu(lin(X, p + "intermediate_query.dense", f"L{l}.ffn.up"))
        X = ln(X + lin(h, p + "output_query.dense", f"L{l}.ffn.down"),
               g(p + "output_query.LayerNorm.weight"), g(p + "output_query.LayerNorm.bias"), m["eps"])
    return X


def metrics(y, ref):
    a, b = y.reshape(-1), ref.reshape(-1)
    c = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    yt, rt = y.reshape(-1, y.shape[-1]), ref.reshape(-1, ref.shape[-1])
    tok = (yt * rt).sum(-1) / (np.linalg.norm(yt, axis=-1) * np.linalg.norm(rt, axis=-1))
    return dict(cos=c, one_minus=1 - c, min_tok=float(tok.min()),
                rel=float(np.linalg.norm(a - b) / np.linalg.norm(b)), max_abs=float(np.abs(a - b).max()))


def gname(G):
    return "per-channel" if G is None else f"G={G}"


def row(label, mt, w=44):
    return (f"  {label:{w}s} cos {mt['cos']:.6f}  1-cos {mt['one_minus']:.2e}  "
            f"min-token cos {mt['min_tok']:.5f}  rel-L2 {mt['rel']:.2e}  max|err| {mt['max_abs']:.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default=os.path.join(REPO, "tests", "fixtures", "trained_minilm"))
    ap.add_argument("--outliers", default="",
                    help="comma-separated image channels to scale by --outlier-scale (then the "
                         "golden outputs no longer apply and are not checked)")
    ap.add_argument("--outlier-scale", type=float, default=30.0)
    args = ap.parse_args()
    m, ck, io = load_case(args.case)
    Z = io["image_embeds"].astype(np.float64)
    if args.outliers:
        Z[..., [int(c) for c in args.outliers.split(",")]] *= args.outlier_scale
    trace = {}
    ref = forward(m, ck, Z, Policy(), trace)
    gold_err = float(np.abs(ref - io["qformer_output"]).max())
    print(f"case {args.case}: L={m['L']} d={m['d']} H={m['H']} f={m['f']} B,M={Z.shape[:2]}")
    print(f"float64 reference vs golden fp32 qformer_output: max|err| {gold_err:.1e}")
    assert args.outliers or gold_err < 1e-4

    print("\nInputs of each linear: per-channel max|x| over tokens, max/median ratio "
          "(how outlier-heavy each activation is):")
    for n in linear_names(m):
        a = np.abs(trace[n]).reshape(-1, trace[n].shape[-1]).max(0)
        top = np.argsort(-a)[:3]
        print(f"  {n:14s} K={a.size:5d}  max/median {a.max() / np.median(a):6.1f}  "
              f"top channels {', '.join(f'{i}:{a[i]:.2f}' for i in top)}")

    Gs = [PC, 128, 64, 32, 16]
    print("\n1) Full scheme (all linears + q.k^T + p.v in int8), by group size G:")
    for G in Gs:
        print(row(gname(G), metrics(forward(m, ck, Z, scheme(m, G)), ref)))
    print("\n   linears only (attention products in float):")
    for G in Gs:
        print(row(gname(G), metrics(forward(m, ck, Z, scheme(m, G, attention=False)), ref)))
    print("\n   attention products only (linears in float):")
    for G in Gs:
        print(row(gname(G), metrics(forward(m, ck, Z, scheme(m, G, linears=False)), ref)))

    print("\n2) Alternatives at G=32:")
    print(row("G=32 full scheme", metrics(forward(m, ck, Z, scheme(m, 32)), ref)))
    print(row("(a) G=32, qk^T and pv in float", metrics(
        forward(m, ck, Z, scheme(m, 32, attention=False)), ref)))
    print(row("(b) G=32, P fixed scale 1/127 per row", metrics(
        forward(m, ck, Z, scheme(m, 32, p_fixed=True)), ref)))
    print(row("(b') per-channel, P fixed scale 1/127", metrics(
        forward(m, ck, Z, scheme(m, PC, p_fixed=True)), ref)))

    print("\n3) Baselines:")
    pol = scheme(m, PC, attention=False)
    pol.lin = {n: (lambda w: fq(w, PC, -1), fq_tensor_sym) for n in linear_names(m)}
    print(row("W per-channel, A per-TENSOR sym, attn float", metrics(forward(m, ck, Z, pol), ref)))
    pol.lin = {n: (lambda w: fq(w, PC, -1), fq_tensor_u8_asym) for n in linear_names(m)}
    print(row("ORT-dynamic-like (A per-tensor u8 asym)", metrics(forward(m, ck, Z, pol), ref)))
    pol.lin = {n: (lambda w: fq(w, PC, -1), None) for n in linear_names(m)}
    print(row("W per-channel only (A float, attn float)", metrics(forward(m, ck, Z, pol), ref)))

    for G in (32, PC):
        print(f"\n4) One op at a time, {gname(G)} (everything else float); 1-cos of the final output:")
        print(f"  {'linear':14s} {'W+A':>10s} {'W only':>10s} {'A only':>10s}")
        worst = []
        for n in linear_names(m):
            vals = []
            for wq, aq in ((True, True), (True, False), (False, True)):
                q = (lambda w, G=G: fq(w, G, -1)) if wq else None
                a = (lambda x, G=G: fq(x, G, -1)) if aq else None
                vals.append(metrics(forward(m, ck, Z, Policy({n: (q, a)})), ref)["one_minus"])
            worst.append((vals[0], n))
            print(f"  {n:14s} {vals[0]:10.2e} {vals[1]:10.2e} {vals[2]:10.2e}")
        full = scheme(m, G, linears=False)
        print(f"  {'attn product':14s} {'both':>10s} {'left only':>10s} {'right only':>10s}")
        for n in attn_names(m):
            l_, r_ = full.att[n]
            vals = [metrics(forward(m, ck, Z, Policy(att={n: pr})), ref)["one_minus"]
                    for pr in ((l_, r_), (l_, None), (None, r_))]
            worst.append((vals[0], n))
            print(f"  {n:14s} {vals[0]:10.2e} {vals[1]:10.2e} {vals[2]:10.2e}")
        worst.sort(reverse=True)
        print("  largest contributors: " + ", ".join(f"{n} ({v:.1e})" for v, n in worst[:4]))

    print("\n5) Mixed precision at G=32: linears kept in fp16 (weights and inputs unquantized), added in")
    print("   order of their one-at-a-time gain, until 1-cos < 1e-3 (attention products stay int8):")
    f16 = lambda w: w.astype(np.float16).astype(np.float64)  # noqa: E731
    names = linear_names(m)

    def mixed(promoted):
        pol = scheme(m, 32)
        for n in promoted:
            pol.lin[n] = (f16, None)
        return metrics(forward(m, ck, Z, pol), ref)["one_minus"]

    base = mixed([])
    gain = sorted(names, key=lambda n: mixed([n]))
    promoted = []
    print(f"  {'all int8':28s} 1-cos {base:.2e}")
    for n in gain:
        promoted.append(n)
        e = mixed(promoted)
        print(f"  + {n:26s} 1-cos {e:.2e}   ({len(promoted)} of {len(names)} linears in fp16)")
        if e < 1e-3:
            break
    attn_only = metrics(forward(m, ck, Z, scheme(m, 32, linears=False)), ref)["one_minus"]
    print(f"  floor with every linear in float (int8 attention products only): 1-cos {attn_only:.2e}")

    if args.outliers:
        ch = [int(c) for c in args.outliers.split(",")]

        def split_acts(x):  # the runtime's decomposition: outlier channels stay float
            y = x.copy()
            y[..., ch] = 0
            y = fq(y, 32, -1)
            y[..., ch] = x[..., ch]
            return y

        def f16_cols(w):  # int8 weights, but the outlier channels' columns in fp16
            q = w.copy()
            q[:, ch] = 0
            q = fq(q, 32, -1)
            q[:, ch] = w[:, ch].astype(np.float16)
            return q

        print(f"\n6) G=32 with image channels {ch} kept in float (the runtime's decomposition):")
        for label, wq in [("their weight columns int8", lambda w: fq(w, 32, -1)),
                          ("their weight columns fp16", f16_cols)]:
            pol = scheme(m, 32)
            for n in linear_names(m):
                if n.endswith(("cross.k", "cross.v")):
                    pol.lin[n] = (wq, split_acts)
            print(row(label, metrics(forward(m, ck, Z, pol), ref)))


if __name__ == "__main__":
    sys.exit(main())
