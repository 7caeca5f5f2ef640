"""The transformers swap (optional: needs torch and transformers, which the test command does
not install): a tiny random BLIP-2 and InstructBLIP built with transformers (no download),
their Q-Former replaced by the f32 blob quantized from their own saved checkpoint; the query
outputs match and greedy generation gives the same tokens."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch transformers)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install transformers)")

import qformer  # noqa: E402
import qformer.hf  # noqa: E402

VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=30, patch_size=6)
# A large initializer range, so that the generated tokens depend on the image (checked below).
QFORMER = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    cross_attention_frequency=1,
    encoder_hidden_size=32,
    vocab_size=40,
    max_position_embeddings=32,
    initializer_range=0.5,
)
TEXT = dict(
    model_type="opt",
    vocab_size=99,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    ffn_dim=32,
    max_position_embeddings=64,
    word_embed_proj_dim=16,
    bos_token_id=2,
    eos_token_id=3,
    pad_token_id=1,
    initializer_range=0.5,
)
IMAGE_TOKEN = 98
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "the", "colour", "of", "car", "a", "?",
         "how", "many", "people", "are", "there", "describe", "image"]  # fmt: skip


def _build(kind: str, tmp_path):
    torch.manual_seed(0)
    if kind == "blip2":
        cfg = transformers.Blip2Config(
            vision_config=VISION, qformer_config=QFORMER, text_config=TEXT, num_query_tokens=4, image_token_index=IMAGE_TOKEN
        )
        model = transformers.Blip2ForConditionalGeneration(cfg).eval()
    else:
        cfg = transformers.InstructBlipConfig(
            vision_config=VISION, qformer_config=QFORMER, text_config=TEXT, num_query_tokens=4, image_token_index=IMAGE_TOKEN
        )
        model = transformers.InstructBlipForConditionalGeneration(cfg).eval()
    model.save_pretrained(tmp_path)
    tokenizer = None
    if kind == "instructblip":
        vocab = tmp_path / "vocab.txt"
        vocab.write_text("\n".join(WORDS + [f"w{i}" for i in range(QFORMER["vocab_size"] - len(WORDS))]) + "\n")
        tokenizer = transformers.BertTokenizer(str(vocab))
        tokenizer.save_pretrained(tmp_path / "qformer_tokenizer")
        os.replace(vocab, tmp_path / "qformer_tokenizer" / "vocab.txt")
    return model, tokenizer


@pytest.mark.parametrize("kind", ["blip2", "instructblip"])
def test_swap_gives_transformers_outputs_and_tokens(tmp_path, kind):
    model, tok = _build(kind, tmp_path)
    qformer.quantize(tmp_path, tmp_path / "f32.qfb", "f32")
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 30, 30)
    ids = torch.tensor([[IMAGE_TOKEN] * 4 + [2, 10, 11, 12]] * 2)
    extra = {}
    if tok is not None:
        q = tok(["what is the colour of the car?", "how many people are there?"], padding=True, return_tensors="pt")
        extra = dict(qformer_input_ids=q.input_ids, qformer_attention_mask=q.attention_mask)
    gen = dict(max_new_tokens=12, do_sample=False)
    with torch.no_grad():
        want_tokens = model.generate(pixel_values=pixels, input_ids=ids, **gen, **extra)
        want = model.get_image_features(pixel_values=pixels, **extra).qformer_outputs.last_hidden_state[:, :4]
    # The test can fail: the two images give different tokens, so the tokens depend on the
    # Q-Former's output.
    assert not torch.equal(want_tokens[0], want_tokens[1])
    old = qformer.hf.swap_qformer(model, tmp_path / "f32.qfb", threads=1)
    assert isinstance(model.qformer, qformer.hf.QformerModule)
    with torch.no_grad():
        got_tokens = model.generate(pixel_values=pixels, input_ids=ids, **gen, **extra)
        got = model.get_image_features(pixel_values=pixels, **extra).qformer_outputs.last_hidden_state
    err = (got - want).abs().max().item()
    print(f"{kind}: query outputs max abs error {err:.2e}; tokens {got_tokens.tolist()}")
    assert got.shape == want.shape and err < 1e-4
    assert torch.equal(got_tokens, want_tokens)
    # int8 runs end to end too (its tokens may differ: not asserted).
    qformer.quantize(tmp_path, tmp_path / "int8.qfb", "int8")
    qformer.hf.swap_qformer(model, tmp_path / "int8.qfb")
    with torch.no_grad():
        out = model.generate(pixel_values=pixels, input_ids=ids, **gen, **extra)
    assert out.shape == want_tokens.shape
    model.qformer = old


def test_swap_refuses_a_blob_that_does_not_fit(tmp_path):
    b2, _ = _build("blip2", tmp_path / "b2")
    ib, _ = _build("instructblip", tmp_path / "ib")
    qformer.quantize(tmp_path / "b2", tmp_path / "b2.qfb", "f32")
    qformer.quantize(tmp_path / "ib", tmp_path / "ib.qfb", "f32")
    with pytest.raises(qformer.InputError, match="has no text parts"):
        qformer.hf.swap_qformer(ib, tmp_path / "b2.qfb")
    with pytest.raises(qformer.InputError, match="has InstructBLIP text parts"):
        qformer.hf.swap_qformer(b2, tmp_path / "ib.qfb")
    with pytest.raises(qformer.InputError, match="is not supported"):
        qformer.hf.swap_qformer(b2.qformer, tmp_path / "b2.qfb")
    other = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "hf_relu_f1")
    qformer.quantize(other, tmp_path / "other.qfb", "f32")
    with pytest.raises(qformer.InputError, match=r"over 24-wide image features; the model has 4 of width 32 over 32"):
        qformer.hf.swap_qformer(b2, tmp_path / "other.qfb")
    qformer.hf.swap_qformer(b2, tmp_path / "b2.qfb")
    with pytest.raises(qformer.InputError, match="encoder_hidden_states"):
        b2.qformer(query_embeds=b2.query_tokens)
    with pytest.raises(qformer.InputError, match="encoder_attention_mask masks image tokens"):
        b2.qformer(query_embeds=b2.query_tokens, encoder_hidden_states=torch.zeros(1, 26, 32), encoder_attention_mask=torch.zeros(1, 26))
    np.testing.assert_equal(
        b2.qformer(query_embeds=b2.query_tokens, encoder_hidden_states=torch.zeros(1, 26, 32)).last_hidden_state.shape, (1, 4, 32)
    )


def test_run_takes_torch_tensors(tmp_path):
    src = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "hf_sharded_gelu_f2_proj")
    qformer.quantize(src, tmp_path / "b.qfb", "int8")
    m = qformer.Model(tmp_path / "b.qfb")
    c = m.config
    torch.manual_seed(3)
    t = torch.randn(2, c["max_image_tokens"], c["encoder_hidden"])
    want = m.run(t.numpy())
    for x in (t, t.half(), t.clone().requires_grad_(False)):
        got = m.run(x)
        ref = want if x.dtype == torch.float32 else m.run(x.numpy())
        assert got["qformer_output"].tobytes() == ref["qformer_output"].tobytes()
    with pytest.raises(qformer.InputError, match="image_embeds: cannot"):
        m.run(t.clone().requires_grad_(True))
    with pytest.raises(qformer.InputError, match="image_embeds"):
        m.run(t.to(torch.bfloat16))
    with pytest.raises(qformer.InputError, match="not C-contiguous"):
        m.run(t.transpose(1, 2).transpose(1, 2).contiguous().transpose(0, 1))
