"""Shared fixtures: the repository's golden checkpoints, the command-line binaries (to compare
with), small safetensors helpers, and blobs quantized once per session."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import qformer

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
BLIP2 = FIXTURES / "hf_relu_f1"  # BLIP-2 names, 2 layers, no projection
BLIP2_PROJ = FIXTURES / "hf_sharded_gelu_f2_proj"  # sharded, with a language projection
INSTRUCT = FIXTURES / "instructblip_hf"  # InstructBLIP with qformer_tokenizer/
BIN_DIR = Path(os.environ.get("QFORMER_BIN_DIR", ROOT / "target" / "release"))

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def read_safetensors(path) -> dict:
    """{name: array} of a safetensors file."""
    b = Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8 : 8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        start, end = t["data_offsets"]
        out[name] = np.frombuffer(b[8 + n + start : 8 + n + end], dtype=_DTYPES[t["dtype"]]).reshape(t["shape"])
    return out


def write_safetensors(path, tensors: dict) -> None:
    """Writes {name: array} as safetensors."""
    header, blobs, at = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        raw = a.tobytes()
        header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def cli(name: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    """Runs the `qformer` or `quantize` binary."""
    exe = BIN_DIR / name
    if not exe.exists():
        if os.environ.get("QFORMER_REQUIRE_CLI"):
            pytest.fail(f"{exe} is missing (cargo build --release -p qformer-std -p quantize)")
        pytest.skip(f"{exe} is not built (cargo build --release -p qformer-std -p quantize)")
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{name} {' '.join(map(str, args))} failed: {r.stderr}")
    return r


def cli_error(name: str, *args) -> str:
    """The message of a failing command (after `error: `)."""
    r = cli(name, *args, check=False)
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert lines, r.stderr
    start = r.stderr.index("error: ") + len("error: ")
    return r.stderr[start:].rstrip("\n")


@pytest.fixture(scope="session")
def blobs(tmp_path_factory) -> dict:
    """{(case, dtype): path} quantized with the Python API."""
    d = tmp_path_factory.mktemp("blobs")
    out = {}
    for case, src in (("blip2", BLIP2), ("proj", BLIP2_PROJ), ("instruct", INSTRUCT)):
        for dtype in ("f32", "fp16", "int8"):
            p = d / f"{case}-{dtype}.qfb"
            qformer.quantize(src, p, dtype)
            out[(case, dtype)] = p
    return out


@pytest.fixture(scope="session")
def demo_blob(tmp_path_factory) -> Path:
    """The demo preset (4 layers, d 256, 65 x 384 image features) in int8: large enough that a
    forward takes milliseconds."""
    d = tmp_path_factory.mktemp("demo")
    cli("qformer", "synth", d, "--preset", "demo", "--batch", "4")
    qformer.quantize(d, d / "int8.qfb", "int8")
    return d / "int8.qfb"
