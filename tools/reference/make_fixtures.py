#!/usr/bin/env python3
"""Generate golden Q-Former fixtures under tests/fixtures/.

Usage:  python3 tools/reference/make_fixtures.py [--out DIR]

Reference outputs are computed on CPU in fp32 with Hugging Face transformers' real
`Blip2QFormerModel`, called exactly as `Blip2ForConditionalGeneration.get_image_features`
calls it (query-only path):

    qformer(query_embeds=query_tokens.expand(B, -1, -1),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=ones(B, M, dtype=long),
            return_dict=True)
    projected = language_projection(last_hidden_state)

Every checkpoint is written to disk first and both references (HF and an independent numpy
fp64 implementation of the math in /work/shared/notes/qformer.md) read their weights back from
the written files, so the fixtures cannot disagree with what is on disk.

io.safetensors (all f32) per case:
    image_embeds     [B, M, d_v]  encoder hidden states (vision output AFTER its post-LayerNorm /
                                  LAVIS `ln_vision`; the Q-Former applies no LayerNorm to them)
    qformer_output   [B, N, d]    last_hidden_state
    hidden_states.i  [B, N, d]    i = 0..=L, from output_hidden_states=True.
                                  hidden_states.0 is the INPUT of layer 0, i.e. the output of the
                                  input LayerNorm: LN_in(query_tokens) (`qformer.layernorm`,
                                  dropout is identity in eval). hidden_states.i (i >= 1) is the
                                  output of layer i-1 (after its FFN LayerNorm);
                                  hidden_states.L == qformer_output.
    projected        [B, N, d_llm] only for cases with a language projection.

Deterministic: every case uses its own seeded torch.Generator; no global RNG state is used.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2QFormerConfig,
    Blip2QFormerModel,
    Blip2VisionConfig,
    OPTConfig,
)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOL = 1e-4

# Weight distributions (much larger than HF's init std 0.02 so attention is clearly non-uniform).
LINEAR_W_STD = 0.2
BIAS_STD = 0.1
LN_GAIN_RANGE = (0.5, 1.5)
LN_BIAS_STD = 0.1
QUERY_STD = 1.0
IMAGE_STD = 1.0

CASES = [
    dict(
        name="hf_sharded_gelu_f2_proj", seed=1001, fmt="hf", L=4, d=48, H=4, I=96, f=2, act="gelu",
        d_v=40, N=8, image_size=12, patch_size=4, B=2, d_llm=56, shards=2, dtype=torch.float32,
        outliers=0,
    ),
    dict(
        name="hf_relu_f1", seed=1002, fmt="hf", L=2, d=32, H=2, I=64, f=1, act="relu",
        d_v=24, N=4, image_size=4, patch_size=2, B=1, d_llm=None, llm_hidden=64, shards=1,
        dtype=torch.float32, outliers=0,
    ),
    dict(
        name="hf_tanh_f3_proj", seed=1003, fmt="hf", L=3, d=64, H=8, I=128, f=3,
        act="gelu_pytorch_tanh", d_v=48, N=6, image_size=8, patch_size=2, B=2, d_llm=40, shards=1,
        dtype=torch.float32, outliers=3,
    ),
    dict(
        name="lavis_gelu_f2", seed=1004, fmt="lavis", L=2, d=32, H=4, I=64, f=2, act="gelu",
        d_v=24, N=4, M=5, B=1, d_llm=20, proj_name="llama_proj", dtype=torch.float32, outliers=0,
    ),
    dict(
        name="hf_bf16", seed=1005, fmt="hf", L=2, d=32, H=2, I=64, f=1, act="relu",
        d_v=24, N=4, image_size=4, patch_size=2, B=1, d_llm=None, llm_hidden=64, shards=1,
        dtype=torch.bfloat16, outliers=0,
    ),
]

# ----------------------------------------------------------------------------------------------
# random weights


def is_layernorm(name):
    return ".LayerNorm." in name or name.startswith("layernorm.") or ".layernorm." in name \
        or "layer_norm" in name or "post_layernorm" in name or name.startswith("ln_vision.")


def random_like(name, shape, gen):
    """Random tensor for parameter `name` with the distributions of the brief."""
    if name.endswith("query_tokens") or name == "query_tokens":
        return torch.randn(shape, generator=gen) * QUERY_STD
    if is_layernorm(name):
        if name.endswith(".weight"):
            lo, hi = LN_GAIN_RANGE
            return lo + (hi - lo) * torch.rand(shape, generator=gen)
        return torch.randn(shape, generator=gen) * LN_BIAS_STD
    if name.endswith(".bias"):
        return torch.randn(shape, generator=gen) * BIAS_STD
    return torch.randn(shape, generator=gen) * LINEAR_W_STD


def qformer_config(c):
    return Blip2QFormerConfig(
        hidden_size=c["d"], num_hidden_layers=c["L"], num_attention_heads=c["H"],
        intermediate_size=c["I"], cross_attention_frequency=c["f"], hidden_act=c["act"],
        encoder_hidden_size=c["d_v"], layer_norm_eps=1e-12,
    )


def blip2_config(c):
    llm_hidden = c["d_llm"] if c["d_llm"] is not None else c["llm_hidden"]
    vision = Blip2VisionConfig(
        hidden_size=c["d_v"], intermediate_size=2 * c["d_v"], num_hidden_layers=1,
        num_attention_heads=2, image_size=c["image_size"], patch_size=c["patch_size"],
    )
    text = OPTConfig(
        hidden_size=llm_hidden, word_embed_proj_dim=llm_hidden, ffn_dim=2 * llm_hidden,
        num_hidden_layers=1, num_attention_heads=2, vocab_size=50, max_position_embeddings=32,
    )
    cfg = Blip2Config(
        vision_config=vision.to_dict(), qformer_config=qformer_config(c).to_dict(),
        text_config=text.to_dict(), num_query_tokens=c["N"],
    )
    cfg.architectures = ["Blip2ForConditionalGeneration"]
    cfg.dtype = "bfloat16" if c["dtype"] == torch.bfloat16 else "float32"
    assert cfg.qformer_config.encoder_hidden_size == c["d_v"]
    return cfg


# Vision / LLM tensors written only so the loader has something realistic to skip.
HF_EXTRA_VISION = [
    "vision_model.embeddings.class_embedding",
    "vision_model.embeddings.position_embedding",
    "vision_model.embeddings.patch_embedding.weight",
    "vision_model.embeddings.patch_embedding.bias",
    "vision_model.encoder.layers.0.layer_norm1.weight",
    "vision_model.encoder.layers.0.self_attn.qkv.weight",
    "vision_model.post_layernorm.weight",
    "vision_model.post_layernorm.bias",
]
HF_EXTRA_LLM = [
    "language_model.model.decoder.embed_tokens.weight",
    "language_model.model.decoder.embed_positions.weight",
    "language_model.model.decoder.final_layer_norm.weight",
    "language_model.model.decoder.final_layer_norm.bias",
]


def make_hf_case(c, gen, outdir):
    """Write a Blip2ForConditionalGeneration-format directory. Returns the HF-named Q-Former
    state dict (fp32 values exactly as stored, i.e. bf16-rounded for bf16 cases)."""
    cfg = blip2_config(c)
    M = (c["image_size"] // c["patch_size"]) ** 2 + 1
    c["M"] = M
    # The real module, only to get the exact names and shapes of its state dict.
    with torch.device("meta"):
        full = Blip2ForConditionalGeneration(cfg)
    shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    del full
    assert shapes["vision_model.embeddings.position_embedding"][1] == M

    names = ["query_tokens"] + [k for k in shapes if k.startswith("qformer.")]
    if c["d_llm"] is not None:
        names += ["language_projection.weight", "language_projection.bias"]
    extras = HF_EXTRA_VISION + HF_EXTRA_LLM
    for k in extras:
        assert k in shapes, k
    tensors = {}
    for k in names + extras:
        tensors[k] = random_like(k, shapes[k], gen).to(c["dtype"]).contiguous()

    # config.json, as Blip2Config.save_pretrained writes it
    tmp = tempfile.mkdtemp()
    cfg.save_pretrained(tmp)
    shutil.copy(os.path.join(tmp, "config.json"), os.path.join(outdir, "config.json"))
    shutil.rmtree(tmp)

    meta = {"format": "pt"}
    if c["shards"] == 1:
        save_file(tensors, os.path.join(outdir, "model.safetensors"), metadata=meta)
    else:
        # module order as HF would shard: shard 1 = query_tokens, vision, qformer input LN and the
        # first half of the layers; shard 2 = the remaining layers, projection, language model.
        half = c["L"] // 2

        def shard_of(k):
            if k.startswith("qformer.encoder.layer."):
                return 1 if int(k.split(".")[3]) < half else 2
            if k.startswith(("language_projection.", "language_model.")):
                return 2
            return 1

        files = {1: "model-00001-of-00002.safetensors", 2: "model-00002-of-00002.safetensors"}
        weight_map = {}
        for s in (1, 2):
            part = {k: v for k, v in tensors.items() if shard_of(k) == s}
            save_file(part, os.path.join(outdir, files[s]), metadata=meta)
            weight_map.update({k: files[s] for k in part})
        total = sum(v.numel() * v.element_size() for v in tensors.values())
        index = {
            "metadata": {"total_parameters": sum(v.numel() for v in tensors.values()),
                         "total_size": total},
            "weight_map": dict(sorted(weight_map.items())),
        }
        with open(os.path.join(outdir, "model.safetensors.index.json"), "w") as fh:
            json.dump(index, fh, indent=2)
            fh.write("\n")
    return cfg


# LAVIS (and MiniGPT-4) names, built from HF-name suffixes.
def hf_to_lavis(k):
    """HF Blip2 checkpoint key -> LAVIS key (only the tensors the HF module has)."""
    if k == "query_tokens":
        return k
    if k.startswith("language_projection."):
        return None  # handled by caller (llama_proj)
    assert k.startswith("qformer."), k
    k = k[len("qformer."):]
    if k.startswith("layernorm."):
        return "Qformer.bert.embeddings.LayerNorm." + k[len("layernorm."):]
    k = k.replace(".attention.attention.", ".attention.self.")
    k = k.replace(".crossattention.attention.", ".crossattention.self.")
    return "Qformer.bert." + k


def make_lavis_case(c, gen, outdir):
    qcfg = qformer_config(c)
    with torch.device("meta"):
        qf = Blip2QFormerModel(qcfg)
    hf_shapes = {"qformer." + k: tuple(v.shape) for k, v in qf.state_dict().items()}
    del qf
    d, I, d_v = c["d"], c["I"], c["d_v"]
    tensors = {}
    hf_of = {}
    for k, shp in [("query_tokens", (1, c["N"], d))] + list(hf_shapes.items()):
        lk = hf_to_lavis(k)
        tensors[lk] = random_like(k, shp, gen)
        hf_of[lk] = k
    p = c["proj_name"]
    tensors[p + ".weight"] = random_like(p + ".weight", (c["d_llm"], d), gen)
    tensors[p + ".bias"] = random_like(p + ".bias", (c["d_llm"],), gen)
    # Unused LAVIS tensors (text side / pretraining heads / vision side).
    vocab, max_pos = 30, 16  # tiny on purpose; real: 30523, 512
    unused = {
        "Qformer.bert.embeddings.word_embeddings.weight": (vocab, d),
        "Qformer.bert.embeddings.position_embeddings.weight": (max_pos, d),
        "Qformer.cls.predictions.bias": (vocab,),
        "Qformer.cls.predictions.transform.dense.weight": (d, d),
        "Qformer.cls.predictions.transform.dense.bias": (d,),
        "Qformer.cls.predictions.transform.LayerNorm.weight": (d,),
        "Qformer.cls.predictions.transform.LayerNorm.bias": (d,),
        "Qformer.cls.predictions.decoder.weight": (vocab, d),
        "Qformer.cls.predictions.decoder.bias": (vocab,),
        "ln_vision.weight": (d_v,),
        "ln_vision.bias": (d_v,),
        "vision_proj.weight": (8, d),
        "vision_proj.bias": (8,),
    }
    for i in range(c["L"]):
        pre = f"Qformer.bert.encoder.layer.{i}."
        unused[pre + "intermediate.dense.weight"] = (I, d)
        unused[pre + "intermediate.dense.bias"] = (I,)
        unused[pre + "output.dense.weight"] = (d, I)
        unused[pre + "output.dense.bias"] = (d,)
        unused[pre + "output.LayerNorm.weight"] = (d,)
        unused[pre + "output.LayerNorm.bias"] = (d,)
    for k, shp in unused.items():
        tensors[k] = random_like(k, shp, gen)
    tensors = {k: v.to(c["dtype"]).contiguous() for k, v in sorted(tensors.items())}
    # LAVIS registers position_ids as a persistent buffer, so real LAVIS checkpoints carry it (I64).
    tensors["Qformer.bert.embeddings.position_ids"] = torch.arange(max_pos, dtype=torch.int64)[None]
    save_file(tensors, os.path.join(outdir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(outdir, "qformer_config.json"), "w") as fh:
        fh.write(qcfg.to_json_string())
    return qcfg


# ----------------------------------------------------------------------------------------------
# reading back


def read_checkpoint(outdir):
    """All tensors of the checkpoint dir as fp32 torch tensors (bf16 upcast exactly)."""
    idx = os.path.join(outdir, "model.safetensors.index.json")
    if os.path.exists(idx):
        files = sorted(set(json.load(open(idx))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for fn in files:
        for k, v in load_file(os.path.join(outdir, fn)).items():
            assert k not in out
            out[k] = v.float()
    return out


def hf_qformer_state(c, ckpt):
    """HF-named tensors (query_tokens, qformer.*, projection) from a checkpoint of either format."""
    if c["fmt"] == "hf":
        qf = {k[len("qformer."):]: v for k, v in ckpt.items() if k.startswith("qformer.")}
        proj = None
        if "language_projection.weight" in ckpt:
            proj = (ckpt["language_projection.weight"], ckpt["language_projection.bias"])
        return ckpt["query_tokens"], qf, proj
    qf = {}
    for k, v in ckpt.items():
        if k.startswith("Qformer.bert.embeddings.LayerNorm."):
            qf["layernorm." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("Qformer.bert.encoder.layer."):
            rest = k[len("Qformer.bert."):]
            text_side = ".intermediate." in rest or (
                ".output." in rest and ".attention.output." not in rest
                and ".crossattention.output." not in rest)
            if text_side:
                continue  # text-side FFN, unused on the query path
            rest = rest.replace(".attention.self.", ".attention.attention.")
            rest = rest.replace(".crossattention.self.", ".crossattention.attention.")
            qf[rest] = v
    p = c["proj_name"]
    return ckpt["query_tokens"], qf, (ckpt[p + ".weight"], ckpt[p + ".bias"])


# ----------------------------------------------------------------------------------------------
# independent numpy fp64 reference (the math of notes/qformer.md), from checkpoint tensors


def np_erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def np_act(name, x):
    if name == "gelu":
        return 0.5 * x * (1.0 + np_erf(x / math.sqrt(2.0)))
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "relu":
        return np.maximum(x, 0.0)
    raise ValueError(name)


def np_ln(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def np_softmax(s):
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def np_reference(c, ckpt, image_embeds):
    """Numpy fp64 query-only forward straight from checkpoint names (either format).
    Returns (out [B,N,d], hidden list, projected or None, mean max attention prob per kind)."""
    g = lambda k: ckpt[k].double().numpy()  # noqa: E731
    lavis = c["fmt"] == "lavis"
    d, H, L, f, eps = c["d"], c["H"], c["L"], c["f"], 1e-12
    hs = d // H
    if lavis:
        ln_in, lay = "Qformer.bert.embeddings.LayerNorm", "Qformer.bert.encoder.layer.{}."
        sa, ca = "attention.self", "crossattention.self"
        proj = c["proj_name"]
    else:
        ln_in, lay = "qformer.layernorm", "qformer.encoder.layer.{}."
        sa, ca = "attention.attention", "crossattention.attention"
        proj = "language_projection"
    lin = lambda x, p: x @ g(p + ".weight").T + g(p + ".bias")  # noqa: E731
    Z = image_embeds.double().numpy()
    B = Z.shape[0]
    Q = np.broadcast_to(g("query_tokens"), (B,) + g("query_tokens").shape[1:])
    maxp = {"self": [], "cross": []}

    def attn(X, S, pre, kind):
        q, k, v = lin(X, pre + ".query"), lin(S, pre + ".key"), lin(S, pre + ".value")
        split = lambda t: t.reshape(t.shape[0], t.shape[1], H, hs).transpose(0, 2, 1, 3)  # noqa
        p = np_softmax(split(q) @ split(k).transpose(0, 1, 3, 2) / math.sqrt(hs))
        maxp[kind].append(p.max(-1).mean())
        o = (p @ split(v)).transpose(0, 2, 1, 3).reshape(X.shape[0], X.shape[1], d)
        return o

    X = np_ln(Q, g(ln_in + ".weight"), g(ln_in + ".bias"), eps)
    hidden = [X]
    for l in range(L):
        p = lay.format(l)
        o = attn(X, X, p + sa, "self")
        X = np_ln(X + lin(o, p + "attention.output.dense"),
                  g(p + "attention.output.LayerNorm.weight"), g(p + "attention.output.LayerNorm.bias"), eps)
        if l % f == 0:
            o = attn(X, Z, p + ca, "cross")
            X = np_ln(X + lin(o, p + "crossattention.output.dense"),
                      g(p + "crossattention.output.LayerNorm.weight"),
                      g(p + "crossattention.output.LayerNorm.bias"), eps)
        h = np_act(c["act"], lin(X, p + "intermediate_query.dense"))
        X = np_ln(X + lin(h, p + "output_query.dense"),
                  g(p + "output_query.LayerNorm.weight"), g(p + "output_query.LayerNorm.bias"), eps)
        hidden.append(X)
    projected = lin(X, proj) if (proj + ".weight") in ckpt else None
    return X, hidden, projected, {k: float(np.mean(v)) for k, v in maxp.items()}


# ----------------------------------------------------------------------------------------------


def run_hf(c, qcfg, ckpt, image_embeds, attn_impl):
    query_tokens, qf_state, proj = hf_qformer_state(c, ckpt)
    qcfg = Blip2QFormerConfig.from_dict(qcfg.to_dict())
    qcfg._attn_implementation = attn_impl
    model = Blip2QFormerModel(qcfg).float().eval()
    model.load_state_dict(qf_state, strict=True)  # raises on any missing / unexpected name
    B, M = image_embeds.shape[:2]
    with torch.no_grad():
        out = model(
            query_embeds=query_tokens.expand(B, -1, -1),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones((B, M), dtype=torch.long),
            return_dict=True,
            output_hidden_states=True,
        )
        # hidden_states[0] must be the input LayerNorm applied to the query tokens
        ln0 = model.layernorm(query_tokens.expand(B, -1, -1))
        assert torch.equal(out.hidden_states[0], ln0), "hidden_states[0] != LN_in(query_tokens)"
        projected = None
        if proj is not None:
            projected = torch.nn.functional.linear(out.last_hidden_state, proj[0], proj[1])
    return out, projected


def check_hf_loader(c, outdir, image_embeds, ref_out, ref_proj):
    """Load the directory with HF's own from_pretrained (meta device skipped: real tensors) and
    make sure every Q-Former tensor we wrote is consumed under its real name."""
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model, info = Blip2ForConditionalGeneration.from_pretrained(
        outdir, dtype=torch.float32, output_loading_info=True)
    model.eval()
    assert not info["unexpected_keys"], info["unexpected_keys"]
    bad = [k for k in info["missing_keys"]
           if k.startswith(("qformer.", "query_tokens")) or
           (k.startswith("language_projection.") and c["d_llm"] is not None)]
    assert not bad, bad
    B, M = image_embeds.shape[:2]
    with torch.no_grad():
        q = model.query_tokens.expand(B, -1, -1)
        out = model.qformer(query_embeds=q, encoder_hidden_states=image_embeds,
                            encoder_attention_mask=torch.ones((B, M), dtype=torch.long),
                            return_dict=True)[0]
        err = (out - ref_out).abs().max().item()
        if ref_proj is not None:
            err = max(err, (model.language_projection(out) - ref_proj).abs().max().item())
    assert err < 1e-5, err
    return err


def build_case(c, root):
    outdir = os.path.join(root, c["name"])
    if os.path.exists(outdir):
        shutil.rmtree(outdir)
    os.makedirs(outdir)
    gen = torch.Generator().manual_seed(c["seed"])
    if c["fmt"] == "hf":
        cfg = make_hf_case(c, gen, outdir)
        qcfg = cfg.qformer_config
    else:
        qcfg = make_lavis_case(c, gen, outdir)
    B, M, d_v = c["B"], c["M"], c["d_v"]
    image_embeds = torch.randn((B, M, d_v), generator=gen) * IMAGE_STD
    if c["outliers"]:
        chans = torch.randperm(d_v, generator=gen)[: c["outliers"]]
        image_embeds[:, :, chans] *= 30.0
    image_embeds = image_embeds.float().contiguous()

    ckpt = read_checkpoint(outdir)
    out, projected = run_hf(c, qcfg, ckpt, image_embeds, "eager")
    out_sdpa, _ = run_hf(c, qcfg, ckpt, image_embeds, "sdpa")
    sdpa_err = (out_sdpa.last_hidden_state - out.last_hidden_state).abs().max().item()
    assert sdpa_err < 1e-5, sdpa_err

    L = c["L"]
    hs = out.hidden_states
    assert len(hs) == L + 1, len(hs)
    assert torch.equal(hs[L], out.last_hidden_state)

    io = {"image_embeds": image_embeds, "qformer_output": out.last_hidden_state.contiguous()}
    for i in range(L + 1):
        io[f"hidden_states.{i}"] = hs[i].contiguous()
    if projected is not None:
        io["projected"] = projected.contiguous()
    io = {k: v.detach().float().clone().contiguous() for k, v in io.items()}
    meta = {
        "case": c["name"], "format": c["fmt"], "hidden_act": c["act"],
        "hidden_states.0": "output of the input LayerNorm, LN_in(query_tokens)",
        "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0],
    }
    # safetensors serialises __metadata__ from a hash map (random key order), so a single key keeps
    # the file byte-for-byte reproducible.
    save_file(io, os.path.join(outdir, "io.safetensors"),
              metadata={"fixture": json.dumps(meta, sort_keys=True)})

    # independent numpy fp64 check, from the files as written
    ckpt = read_checkpoint(outdir)
    with safe_open(os.path.join(outdir, "io.safetensors"), "pt") as fh:
        io_back = {k: fh.get_tensor(k) for k in fh.keys()}
    X, hidden, proj_np, maxp = np_reference(c, ckpt, io_back["image_embeds"])
    errs = [np.abs(X - io_back["qformer_output"].double().numpy()).max()]
    for i, h in enumerate(hidden):
        errs.append(np.abs(h - io_back[f"hidden_states.{i}"].double().numpy()).max())
    if proj_np is not None:
        errs.append(np.abs(proj_np - io_back["projected"].double().numpy()).max())
    assert (proj_np is None) == ("projected" not in io_back)
    np_err = float(max(errs))
    assert np_err < TOL, f"{c['name']}: numpy vs HF max abs err {np_err}"

    loader_err = None
    if c["fmt"] == "hf":
        loader_err = check_hf_loader(c, outdir, image_embeds, out.last_hidden_state, projected)

    size = sum(os.path.getsize(os.path.join(outdir, f)) for f in os.listdir(outdir))
    print(f"{c['name']:26s} L={L} d={c['d']} H={c['H']} I={c['I']} f={c['f']} act={c['act']:17s} "
          f"d_v={d_v} N={c['N']} M={M} B={B} d_llm={c['d_llm']}  "
          f"numpy-vs-HF max|err|={np_err:.2e}  sdpa-vs-eager={sdpa_err:.1e}  "
          f"from_pretrained={'n/a' if loader_err is None else f'{loader_err:.1e}'}  "
          f"mean max attn prob self={maxp['self']:.2f} (uniform {1 / c['N']:.2f}) "
          f"cross={maxp['cross']:.2f} (uniform {1 / M:.2f})  {size / 1024:.1f} KiB")
    return np_err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, numpy {np.__version__}")
    for c in CASES:
        build_case(dict(c), args.out)
    total = 0
    for c in CASES:
        dp = os.path.join(args.out, c["name"])
        total += sum(os.path.getsize(os.path.join(dp, f)) for f in os.listdir(dp))
    print(f"total size of these fixtures: {total / 1024:.1f} KiB")
    assert total < 2 * 1024 * 1024


if __name__ == "__main__":
    sys.exit(main())
