"""The Python API against the command line it shares its code with: same blobs, same output
bytes, same messages; every call, the errors, dtypes, batch shapes and thread counts."""

from __future__ import annotations

import pydoc
import re
import threading
import time
import warnings

import numpy as np
import pytest
from conftest import BLIP2, BLIP2_PROJ, INSTRUCT, ROOT, cli, cli_error, read_safetensors, write_safetensors

import qformer

# ---------------------------------------------------------------- quantize


@pytest.mark.parametrize("dtype", ["f32", "fp16", "int8"])
@pytest.mark.parametrize("src", [BLIP2, BLIP2_PROJ, INSTRUCT], ids=["blip2", "sharded-proj", "instructblip"])
def test_quantize_writes_the_clis_bytes(tmp_path, src, dtype):
    s = qformer.quantize(src, tmp_path / "py.qfb", dtype)
    cli("quantize", src, "-o", tmp_path / "cli.qfb", "--dtype", dtype, "--quiet")
    py, want = (tmp_path / "py.qfb").read_bytes(), (tmp_path / "cli.qfb").read_bytes()
    assert py == want
    assert s["blob_bytes"] == len(py) and s["dtype"] == dtype and s["path"] == str(tmp_path / "py.qfb")
    assert s["parameters"] > 0 and s["arena_bytes"] == qformer.Model(tmp_path / "py.qfb").arena_bytes
    # The summary is the one `quantize` prints after its first two lines.
    out = cli("quantize", src, "-o", tmp_path / "cli2.qfb", "--dtype", dtype, "--quiet").stdout
    assert out.splitlines()[1] == f"{s['parameters']} parameters"
    assert s["report"] == "\n".join(out.splitlines()[2:])


def test_quantize_options_match_the_cli(tmp_path):
    qformer.quantize(BLIP2, tmp_path / "py.qfb", "int8", group=16, max_image_tokens=7)
    cli("quantize", BLIP2, "-o", tmp_path / "cli.qfb", "--group", "16", "--max-image-tokens", "7", "-q")
    assert (tmp_path / "py.qfb").read_bytes() == (tmp_path / "cli.qfb").read_bytes()
    assert qformer.Model(tmp_path / "py.qfb").config["max_image_tokens"] == 7
    qformer.quantize(INSTRUCT, tmp_path / "ib.qfb", "fp16", max_text_tokens=8, tokenizer=INSTRUCT / "qformer_tokenizer")
    assert qformer.Model(tmp_path / "ib.qfb").config["max_text_tokens"] == 8


@pytest.mark.parametrize(
    "args,kwargs,cls",
    [
        (["/nonexistent/ckpt"], {}, qformer.FileError),
        ([BLIP2 / "config.json"], {}, qformer.CheckpointError),
        ([INSTRUCT], {"max_text_tokens": 1}, qformer.CheckpointError),
        ([INSTRUCT], {"tokenizer": BLIP2}, qformer.CheckpointError),
        ([BLIP2], {"group": 512}, qformer.CheckpointError),
    ],
)
def test_quantize_errors_carry_the_clis_message(tmp_path, args, kwargs, cls):
    flags = {"max_text_tokens": "--max-text-tokens", "tokenizer": "--tokenizer", "group": "--group"}
    cli_args = [*args, "-o", tmp_path / "cli.qfb", "-q"]
    for k, v in kwargs.items():
        cli_args += [flags[k], v]
    want = cli_error("quantize", *cli_args)
    with pytest.raises(cls) as e:
        qformer.quantize(*args, tmp_path / "py.qfb", **kwargs)
    assert str(e.value) == want
    assert isinstance(e.value, qformer.Error)
    assert not (tmp_path / "py.qfb").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".qformer-")] == []


def test_quantize_refuses_bad_options(tmp_path):
    with pytest.raises(qformer.InputError, match=r'dtype "int4" is not one of "f32", "fp16", "int8"'):
        qformer.quantize(BLIP2, tmp_path / "x.qfb", "int4")
    with pytest.raises(qformer.InputError) as e:
        qformer.quantize(BLIP2, tmp_path / "x.qfb", group=17)
    assert str(e.value) == "group: 17 is not a valid int8 group size (a non-zero multiple of 16, at most 1048576)"
    assert isinstance(e.value, ValueError)
    with pytest.raises(qformer.InputError, match="group=-16 is not a whole number"):
        qformer.quantize(BLIP2, tmp_path / "x.qfb", group=-16)
    with pytest.raises(qformer.InputError, match="max_image_tokens='7' is not a whole number"):
        qformer.quantize(BLIP2, tmp_path / "x.qfb", max_image_tokens="7")


def test_quantize_refuses_to_overwrite_its_source(tmp_path):
    import shutil

    src = tmp_path / "ck"
    shutil.copytree(BLIP2, src)
    before = (src / "model.safetensors").read_bytes()
    want = cli_error("quantize", src, "-o", src / "model.safetensors", "-q")
    with pytest.raises(qformer.CheckpointError) as e:
        qformer.quantize(src, src / "model.safetensors")
    assert str(e.value) == want and "refusing to write" in want
    assert (src / "model.safetensors").read_bytes() == before


# ---------------------------------------------------------------- Model


def test_model_properties(blobs):
    m = qformer.Model(blobs[("instruct", "int8")])
    c = m.config
    assert (c["num_layers"], c["hidden"], c["num_heads"], c["num_queries"]) == (3, 32, 4, 4)
    assert (c["encoder_hidden"], c["max_image_tokens"], c["projection_dim"]) == (24, 10, 20)
    assert c["has_text"] and c["max_text_tokens"] == 16 and c["vocab_size"] == 340
    assert m.precision == "int8" and m.blob_bytes == blobs[("instruct", "int8")].stat().st_size
    inspect = cli("qformer", "inspect", blobs[("instruct", "int8")]).stdout
    assert m.report() == "\n".join(inspect.splitlines()[1:])
    assert f"arena bytes              {m.arena_bytes} " in inspect
    k = m.kernels
    assert set(k) == {"q8", "float", "quant"}
    bench = cli("qformer", "bench", blobs[("instruct", "int8")], "--iters", "1", "--warmup", "0", "--json").stdout
    assert f'"q8_kernel": "{k["q8"]}"' in bench and f'"float_kernel": "{k["float"]}"' in bench
    assert not qformer.Model(blobs[("blip2", "f32")]).config["has_text"]
    assert "InstructBLIP" in repr(m)


def test_model_mmap_runs_the_same(blobs):
    p = blobs[("proj", "int8")]
    x = read_safetensors(BLIP2_PROJ / "io.safetensors")["image_embeds"]
    a = qformer.Model(p).run(x)
    b = qformer.Model(p, mmap=True).run(x)
    assert qformer.Model(p, mmap=True).report() == qformer.Model(p).report()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes()


@pytest.mark.parametrize("mmap", [False, True])
def test_model_errors(tmp_path, blobs, mmap):
    flag = ["--mmap"] if mmap else []
    good = blobs[("blip2", "int8")].read_bytes()
    cases = {
        "missing.qfb": None,
        "garbage.qfb": b"not a blob at all, just some bytes" * 10,
        "truncated.qfb": good[: len(good) // 2],
        "flipped.qfb": good[:100] + bytes([good[100] ^ 1]) + good[101:],
        "empty.qfb": b"",
    }
    for name, data in cases.items():
        p = tmp_path / name
        if data is not None:
            p.write_bytes(data)
        want = cli_error("qformer", "inspect", p, *flag)
        cls = qformer.FileError if data is None else qformer.BlobError
        with pytest.raises(cls) as e:
            qformer.Model(p, mmap=mmap)
        assert str(e.value) == want, name
    assert isinstance(pytest.raises(qformer.FileError, qformer.Model, tmp_path / "missing.qfb").value, OSError)
    with pytest.raises(qformer.BlobError, match="is not a regular file"):
        qformer.Model(tmp_path, mmap=mmap)


# ---------------------------------------------------------------- run: same bytes as `qformer run`


def _cli_run(tmp_path, blob, inp, *args):
    out = tmp_path / "cli-out.safetensors"
    cli("qformer", "run", blob, "--input", inp, "--output", out, *args)
    return read_safetensors(out)


def _same(py: dict, want: dict):
    assert set(py) == set(want)
    for k in want:
        assert py[k].dtype == np.float32 and py[k].shape == want[k].shape, k
        assert py[k].tobytes() == want[k].tobytes(), k


@pytest.mark.parametrize("dtype", ["f32", "fp16", "int8"])
@pytest.mark.parametrize("case", ["blip2", "proj"])
def test_run_bytes_equal_the_clis(tmp_path, blobs, case, dtype):
    src = {"blip2": BLIP2, "proj": BLIP2_PROJ}[case]
    x = read_safetensors(src / "io.safetensors")["image_embeds"]
    m = qformer.Model(blobs[(case, dtype)])
    out = m.run(x)
    _same(out, _cli_run(tmp_path, blobs[(case, dtype)], src / "io.safetensors"))
    assert ("projected" in out) == (case == "proj")
    if case == "proj":
        c = m.config
        assert out["projected"].shape == (x.shape[0], c["num_queries"], c["projection_dim"])


@pytest.mark.parametrize("dtype", ["f32", "fp16", "int8"])
def test_run_batch_shapes_and_f16_input(tmp_path, blobs, dtype):
    m = qformer.Model(blobs[("proj", dtype)])
    c = m.config
    rng = np.random.default_rng(5)
    x3 = rng.standard_normal((3, c["max_image_tokens"], c["encoder_hidden"]), dtype=np.float32)
    np.save(tmp_path / "x3.npy", x3)
    want = _cli_run(tmp_path, blobs[("proj", dtype)], tmp_path / "x3.npy")
    _same(m.run(x3), want)
    # [M, d_v] is one image: B = 1, the first image's bytes.
    one = m.run(x3[0])
    assert one["qformer_output"].shape == (1, c["num_queries"], c["hidden"])
    assert one["qformer_output"].tobytes() == want["qformer_output"][0].tobytes()
    # Fewer tokens than the maximum.
    few = np.ascontiguousarray(x3[:, :3])
    np.save(tmp_path / "few.npy", few)
    _same(m.run(few), _cli_run(tmp_path, blobs[("proj", dtype)], tmp_path / "few.npy"))
    # float16 input, as the CLI reads a float16 .npy.
    h = x3.astype(np.float16)
    np.save(tmp_path / "h.npy", h)
    _same(m.run(h), _cli_run(tmp_path, blobs[("proj", dtype)], tmp_path / "h.npy"))


@pytest.mark.parametrize("threads", [None, 0, 1, 2, 3, 8])
def test_run_threads_give_the_same_bytes(tmp_path, demo_blob, threads):
    m = qformer.Model(demo_blob)
    inp = demo_blob.parent / "input.safetensors"
    x = read_safetensors(inp)["image_embeds"]
    want = _cli_run(tmp_path, demo_blob, inp, "--threads", "1")
    if threads is not None and threads > qformer.MAX_THREADS:
        pytest.skip(f"{threads} threads is over this machine's {qformer.MAX_THREADS}")
    _same(m.run(x, threads=threads), want)


def test_run_instructblip_ids_and_prompt(tmp_path, blobs):
    io = read_safetensors(INSTRUCT / "io.safetensors")
    x, ids, mask = io["image_embeds"], io["qformer_input_ids"], io["qformer_attention_mask"]
    for dtype in ("f32", "int8"):
        blob = blobs[("instruct", dtype)]
        m = qformer.Model(blob)
        # ids and mask from the file, as the CLI reads them.
        _same(m.run(x, input_ids=ids, attention_mask=mask), _cli_run(tmp_path, blob, INSTRUCT / "io.safetensors"))
        # int32 ids, bool mask: the same.
        _same(m.run(x, input_ids=ids.astype(np.int32), attention_mask=mask.astype(bool)), m.run(x, input_ids=ids, attention_mask=mask))
        # --prompt, one for every image.
        write_safetensors(tmp_path / "x.safetensors", {"image_embeds": x})
        prompt = "What is the colour of the car?"
        _same(m.run(x, prompt=prompt), _cli_run(tmp_path, blob, tmp_path / "x.safetensors", "--prompt", prompt))
        # The tokens of --prompt, given as ids: the same.
        tokens = np.array(m.tokenize(prompt), dtype=np.int64)
        _same(m.run(x, input_ids=tokens), m.run(x, prompt=prompt))
        # One row of ids for all images, [T].
        _same(m.run(x, input_ids=ids[0][mask[0] == 1]), m.run(x, input_ids=ids[:1][:, mask[0] == 1]))
    # The accuracy of the f32 blob against transformers' outputs stored with the fixture.
    out = qformer.Model(blobs[("instruct", "f32")]).run(x, input_ids=ids, attention_mask=mask)
    assert np.abs(out["qformer_output"] - io["qformer_output"]).max() < 1e-4
    assert np.abs(out["projected"] - io["projected"]).max() < 1e-4


def test_run_notes_are_warnings(blobs):
    m = qformer.Model(blobs[("instruct", "f32")])
    io = read_safetensors(INSTRUCT / "io.safetensors")
    with pytest.warns(qformer.QformerWarning, match=r"no instruction given \(prompt= or input_ids=\): running the queries alone"):
        out = m.run(io["image_embeds"])
    assert np.abs(out["qformer_output"] - io["qformer_output_no_instruction"]).max() < 1e-4
    long = " ".join(["car"] * 40)
    with pytest.warns(qformer.QformerWarning, match=r"prompt is \d+ tokens long, truncated to the blob's max_text_tokens = 16"):
        m.run(io["image_embeds"], prompt=long)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.run(io["image_embeds"], prompt="what?")
        qformer.Model(blobs[("blip2", "f32")]).run(read_safetensors(BLIP2 / "io.safetensors")["image_embeds"])


class _ArrayLike:
    """A tensor stand-in with `__array__` only."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a


class _DLPackOnly:
    """A tensor stand-in with DLPack only."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def test_run_takes_array_likes_and_dlpack(blobs):
    m = qformer.Model(blobs[("proj", "int8")])
    x = read_safetensors(BLIP2_PROJ / "io.safetensors")["image_embeds"].copy()
    want = m.run(x)
    _same(m.run(_ArrayLike(x)), want)
    _same(m.run(_DLPackOnly(x)), want)


def test_run_outputs_own_their_memory_and_release_the_gil(demo_blob):
    m = qformer.Model(demo_blob)
    x = read_safetensors(demo_blob.parent / "input.safetensors")["image_embeds"]
    x = np.concatenate([x] * 4)  # 16 images
    out = m.run(x, threads=1)
    a = out["qformer_output"]
    assert a.flags.c_contiguous and a.flags.writeable and not a.flags.owndata  # a view of the Rust buffer
    a += 1  # writable, and the other output is independent
    assert not np.shares_memory(a, out["projected"])
    # While one thread computes, another runs Python: the GIL is released.
    done = threading.Event()
    stamps = []

    def work():
        m.run(x, threads=1)
        done.set()

    t = threading.Thread(target=work)
    start = time.perf_counter()
    t.start()
    while not done.is_set():
        stamps.append(time.perf_counter())
    t.join()
    total = time.perf_counter() - start
    gaps = np.diff([start, *stamps])
    assert total > 0.05, f"the forward took {total:.3f} s, too short to tell"
    assert gaps.max() < total / 2, f"the main thread stalled {gaps.max():.3f} s of {total:.3f} s: GIL held"


# ---------------------------------------------------------------- run: errors


def _input_error(m, match, *args, **kwargs):
    with pytest.raises(qformer.InputError, match=match) as e:
        m.run(*args, **kwargs)
    assert isinstance(e.value, ValueError) and isinstance(e.value, qformer.Error)
    return str(e.value)


def test_run_refuses_bad_image_embeds(blobs):
    m = qformer.Model(blobs[("proj", "int8")])
    c = m.config
    dv, mx = c["encoder_hidden"], c["max_image_tokens"]
    x = np.zeros((2, mx, dv), np.float32)
    _input_error(m, r"image_embeds has dtype float64, not float32 or float16", x.astype(np.float64))
    _input_error(m, r"image_embeds has dtype int32", x.astype(np.int32))
    _input_error(m, r"image_embeds is a list, not a numpy array", x.tolist())
    _input_error(m, rf"image_embeds has shape \[{dv}\], expected \[M, d_v\] or \[B, M, d_v\]", x[0, 0])
    _input_error(m, rf"image_embeds has shape \[1, 2, {mx}, {dv}\]", x[None])
    _input_error(m, rf"image_embeds: image_embeds are 12 wide, the model expects d_v = {dv}", np.ascontiguousarray(x[..., :12]))
    _input_error(m, rf"image_embeds: 0 image tokens, the blob accepts 1 to {mx}", x[:, :0])
    _input_error(m, rf"image_embeds: {mx + 1} image tokens, the blob accepts 1 to {mx}", np.zeros((1, mx + 1, dv), np.float32))
    _input_error(m, r"image_embeds is not C-contiguous .*numpy.ascontiguousarray", np.zeros((dv, mx), np.float32).T)
    _input_error(m, r"image_embeds is not C-contiguous", np.zeros((mx, 2 * dv), np.float32)[:, ::2])
    nan = x.copy()
    nan[1, 2, 3] = np.nan
    want = _input_error(m, r"image 1 of the batch: ", nan)
    inf = x.copy()
    inf[0, 0, 0] = np.inf
    _input_error(m, r"image 0 of the batch: ", inf)
    # The CLI's message for the same NaN input.
    np.save(m.path + ".nan.npy", nan)
    assert cli_error("qformer", "run", m.path, "--input", m.path + ".nan.npy", "--output", m.path + ".o") == want


def test_run_refuses_bad_instructions(tmp_path, blobs):
    ib = qformer.Model(blobs[("instruct", "int8")])
    b2 = qformer.Model(blobs[("proj", "int8")])
    io = read_safetensors(INSTRUCT / "io.safetensors")
    x, ids, mask = io["image_embeds"], io["qformer_input_ids"], io["qformer_attention_mask"]
    x2 = read_safetensors(BLIP2_PROJ / "io.safetensors")["image_embeds"]
    # An instruction for a blob without text parts: the CLI's message.
    write_safetensors(tmp_path / "x2.safetensors", {"image_embeds": x2})
    want = cli_error("qformer", "run", b2.path, "--input", tmp_path / "x2.safetensors", "--output", tmp_path / "o", "--prompt", "hi")
    assert _input_error(b2, "no text parts", x2, prompt="hi") == want
    _input_error(b2, "no text parts", x2, input_ids=np.array([2, 3]))
    _input_error(ib, "input_ids and prompt both give an instruction: give one of them", x, prompt="hi", input_ids=ids)
    _input_error(ib, "attention_mask given without input_ids", x, attention_mask=mask)
    _input_error(ib, r"input_ids value -1 at flat index 3 is not a token id", x, input_ids=np.array([[2, 5, 6, -1]] * 2))
    _input_error(ib, r"attention_mask value 2 at flat index 0 is not 0 or 1", x, input_ids=ids, attention_mask=np.full_like(mask, 2) * (mask > -1))
    _input_error(ib, r"attention_mask has shape \[2, 3\], qformer_input_ids \[2, 14\]: they must match", x, input_ids=ids, attention_mask=np.ascontiguousarray(mask[:, :3]))
    _input_error(ib, r"input_ids has shape \[1, 2, 14\], expected \[B, T\] or \[T\]", x, input_ids=ids[None])
    _input_error(ib, r"input_ids has dtype float64, not int64 or int32", x, input_ids=ids.astype(float))
    _input_error(ib, r"attention_mask has dtype float32", x, input_ids=ids, attention_mask=mask.astype(np.float32))
    _input_error(ib, r"3 instructions for 2 images: give one per image, or one for all", x, input_ids=np.concatenate([ids, ids[:1]]))
    _input_error(ib, r"input_ids is not C-contiguous", x, input_ids=np.ascontiguousarray(np.stack([ids, ids], axis=-1))[..., 0])
    # Ids at or past the vocabulary, and more tokens than the blob plans for: the core's messages,
    # as the CLI gives them for the same file.
    for bad in (np.full_like(ids, 340), np.zeros((2, 17), np.int64) + 5):
        write_safetensors(tmp_path / "bad.safetensors", {"image_embeds": x, "qformer_input_ids": bad})
        want = cli_error("qformer", "run", ib.path, "--input", tmp_path / "bad.safetensors", "--output", tmp_path / "o")
        assert _input_error(ib, "image 0 of the batch", x, input_ids=bad) == want
    _input_error(ib, r"prompt is a int, not a str", x, prompt=3)


def test_run_refuses_bad_thread_counts(blobs):
    m = qformer.Model(blobs[("proj", "int8")])
    x = read_safetensors(BLIP2_PROJ / "io.safetensors")["image_embeds"]
    _input_error(m, r"threads=-1: give 0 or None \(one per core\) or a positive count", x, threads=-1)
    n = qformer.MAX_THREADS + 1
    _input_error(m, rf"{n} threads asked for, at most {qformer.MAX_THREADS} allowed", x, threads=n)
    _input_error(m, r"threads is a float, not an int", x, threads=1.5)
    _input_error(m, r"threads is a bool", x, threads=True)


# ---------------------------------------------------------------- verify


def _cli_table(stdout: str) -> list:
    rows = []
    for line in stdout.splitlines():
        m = re.match(r"^(input norm|layer \d+|qformer_output|projected)\s+(\S+)\s+(\S+)\s+(\S+)$", line)
        if m:
            rows.append((m.group(1), float(m.group(2)), float(m.group(3)), float(m.group(4))))
    return rows


@pytest.mark.parametrize("dtype", ["f32", "fp16", "int8"])
@pytest.mark.parametrize("case", ["blip2", "proj", "instruct"])
def test_verify_table_is_the_clis(blobs, case, dtype):
    src = {"blip2": BLIP2, "proj": BLIP2_PROJ, "instruct": INSTRUCT}[case]
    blob = blobs[(case, dtype)]
    table = qformer.verify(blob, src, src / "io.safetensors")
    out = cli("qformer", "verify", blob, "--reference", src, "--input", src / "io.safetensors", "--min-cosine=-1").stdout
    want = _cli_table(out)
    L = qformer.Model(blob).config["num_layers"]
    names = ["input norm", *[f"layer {i}" for i in range(L)], "qformer_output"] + (["projected"] if case != "blip2" else [])
    assert [r["name"] for r in table] == names == [w[0] for w in want]
    for r, (_, cos, mx, rms) in zip(table, want):
        assert set(r) == {"name", "cosine", "max_abs", "rms"}
        assert f"{r['cosine']:.7f}" == f"{cos:.7f}"
        assert f"{r['max_abs']:.3e}" == f"{mx:.3e}" and f"{r['rms']:.3e}" == f"{rms:.3e}"
    if dtype == "f32":
        assert all(r["cosine"] > 0.999999 and r["max_abs"] < 1e-4 for r in table)
    else:
        assert table[-1]["cosine"] > 0.99


def test_verify_arrays_prompt_and_min_cosine(blobs):
    blob = blobs[("instruct", "int8")]
    io = read_safetensors(INSTRUCT / "io.safetensors")
    from_file = qformer.verify(blob, INSTRUCT, INSTRUCT / "io.safetensors")
    arrays = qformer.verify(blob, INSTRUCT, io["image_embeds"], input_ids=io["qformer_input_ids"], attention_mask=io["qformer_attention_mask"])
    assert from_file == arrays
    prompted = qformer.verify(blob, INSTRUCT, io["image_embeds"], prompt="What is unusual about this image?")
    assert prompted != arrays and prompted[-1]["cosine"] > 0.99
    with pytest.warns(qformer.QformerWarning, match="no instruction given"):
        qformer.verify(blob, INSTRUCT, io["image_embeds"])
    # min_cosine: the CLI's failure, with the table.
    want = cli_error("qformer", "verify", blob, "--reference", INSTRUCT, "--input", INSTRUCT / "io.safetensors", "--min-cosine", "1")
    with pytest.raises(qformer.VerificationError) as e:
        qformer.verify(blob, INSTRUCT, INSTRUCT / "io.safetensors", min_cosine=1.0)
    assert str(e.value) == want and e.value.table == from_file
    assert qformer.verify(blob, INSTRUCT, INSTRUCT / "io.safetensors", min_cosine=0.9) == from_file
    with pytest.raises(qformer.InputError, match=r"min_cosine: 2 is not a cosine similarity \(a number from -1 to 1\)"):
        qformer.verify(blob, INSTRUCT, INSTRUCT / "io.safetensors", min_cosine=2)
    with pytest.raises(qformer.InputError, match="min_cosine: NaN is not a cosine similarity"):
        qformer.verify(blob, INSTRUCT, INSTRUCT / "io.safetensors", min_cosine=float("nan"))


def test_verify_errors(tmp_path, blobs):
    blob = blobs[("instruct", "int8")]
    # A blob against another checkpoint: the CLI's message.
    want = cli_error("qformer", "verify", blob, "--reference", BLIP2, "--input", BLIP2 / "io.safetensors")
    with pytest.raises(qformer.CheckpointError) as e:
        qformer.verify(blob, BLIP2, BLIP2 / "io.safetensors")
    assert str(e.value) == want and "was not made from" in want
    with pytest.raises(qformer.FileError, match="does not exist"):
        qformer.verify(tmp_path / "none.qfb", INSTRUCT, INSTRUCT / "io.safetensors")
    with pytest.raises(qformer.FileError, match="does not exist"):
        qformer.verify(blob, tmp_path / "none", INSTRUCT / "io.safetensors")
    want = cli_error("qformer", "verify", blob, "--reference", INSTRUCT, "--input", tmp_path / "none.safetensors")
    with pytest.raises(qformer.FileError) as e:
        qformer.verify(blob, INSTRUCT, tmp_path / "none.safetensors")
    assert str(e.value) == want
    io = read_safetensors(INSTRUCT / "io.safetensors")
    with pytest.raises(qformer.InputError, match="image_embeds are 12 wide"):
        qformer.verify(blob, INSTRUCT, np.ascontiguousarray(io["image_embeds"][..., :12]))
    with pytest.raises(qformer.InputError, match="input_ids and attention_mask go with an array"):
        qformer.verify(blob, INSTRUCT, INSTRUCT / "io.safetensors", input_ids=io["qformer_input_ids"])
    with pytest.raises(qformer.InputError, match="carries qformer_input_ids and prompt gives an instruction too"):
        qformer.verify(blob, INSTRUCT, INSTRUCT / "io.safetensors", prompt="hi")


# ---------------------------------------------------------------- documentation


def test_help_of_run_says_what_the_readme_says():
    doc = pydoc.render_doc(qformer.Model.run, renderer=pydoc.plaintext)
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python") :]
    section = section[: section.index("\n## ", 4)]
    # Each claim the README's Python section makes about run, in the docstring too.
    for claim in [
        "[M, d_v]",
        "[B, M, d_v]",
        "float32 or float16",
        "DLPack",
        "__array__",
        "qformer_output",
        "projected",
        "GIL released",
        "no copy",
        "QformerWarning",
        "MAX_THREADS",
    ]:
        assert claim in section, f"README: {claim}"
        assert claim in doc, f"help(qformer.Model.run): {claim}"
    # The signature with its type hints (quoted or not, as the Python version renders them).
    flat = re.sub(r"\s+", " ", doc).replace("( ", "(").replace(" )", ")")
    sig = re.search(r"run\(self, image_embeds: '?Any'?, prompt: '?Optional\[str\]'? = None, input_ids: '?Any'? = None, "
                    r"attention_mask: '?Any'? = None, threads: '?Optional\[int\]'? = None\)", flat)
    assert sig, doc[:400]


def test_readme_python_example_runs_as_written(capsys, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert "(2, 4, 32) (2, 4, 20)" in out
    want = re.search(r"print\(e\)\s+# (.*)", code).group(1)
    assert out[-1] == want
    rows = [line.split()[0] for line in out if re.match(r"^(input|layer|qformer_output|projected)", line)]
    assert rows == ["input", "layer", "layer", "layer", "qformer_output", "projected"]
