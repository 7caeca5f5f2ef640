"""qformer: the quantized Q-Former of BLIP-2, InstructBLIP and MiniGPT-4 (f32, fp16, int8).

The same Rust code as the ``qformer`` and ``quantize`` command lines (``qformer-std``), with
their messages, behind a Python API::

    import qformer
    qformer.quantize("blip2-checkpoint/", "blip2-int8.qfb", dtype="int8")
    table = qformer.verify("blip2-int8.qfb", "blip2-checkpoint/", image_embeds)
    m = qformer.Model("blip2-int8.qfb")
    out = m.run(image_embeds)            # {"qformer_output": [B, N, d], "projected": [B, N, d_llm]}

``qformer.hf.swap_qformer(hf_model, m)`` puts a blob in place of the Q-Former of a loaded
transformers ``Blip2ForConditionalGeneration`` or ``InstructBlipForConditionalGeneration``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Optional, Union

import numpy as np

from . import _native
from ._errors import BlobError, CheckpointError, Error, FileError, InputError, VerificationError

__all__ = [
    "Model",
    "quantize",
    "verify",
    "Error",
    "FileError",
    "BlobError",
    "CheckpointError",
    "InputError",
    "VerificationError",
    "QformerWarning",
    "MAX_THREADS",
    "__version__",
]

__version__: str = _native.__version__
#: The most threads ``Model.run`` accepts here: 4 per available core, at most 1024.
MAX_THREADS: int = _native.MAX_THREADS

PathLike = Union[str, "os.PathLike[str]"]


class QformerWarning(UserWarning):
    """The notes the command line prints on stderr: no instruction given to an InstructBLIP
    blob (the queries run alone), an instruction truncated to the blob's ``max_text_tokens``."""


def _warn(notes: List[str]) -> None:
    for note in notes:
        warnings.warn(note[len("note: ") :] if note.startswith("note: ") else note, QformerWarning, stacklevel=3)


def _as_numpy(x: Any, name: str) -> Any:
    """A numpy array of ``x``: itself, through DLPack (torch, jax, cupy on the CPU), or through
    ``__array__``; no copy where the source allows it. Anything else is left to the Rust side,
    which names its type."""
    if x is None or isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except Exception as e:  # torch: requires_grad, a GPU tensor, bfloat16 ...
            if not hasattr(x, "__array__"):
                raise InputError(
                    f"{name}: cannot read it through DLPack ({e}); give a float32 or float16 CPU array"
                ) from None
    if hasattr(x, "__array__"):
        try:
            return np.asarray(x)
        except Exception as e:
            raise InputError(
                f"{name}: cannot convert it to a numpy array ({e}); give a float32 or float16 CPU array without "
                "gradient, e.g. tensor.detach().cpu().float()"
            ) from None
    return x


class Model:
    """A qformer blob, loaded and validated (checksum, layout, contents), ready to run.

    ``Model(path)`` reads the blob into memory (as ``qformer run`` does); ``Model(path,
    mmap=True)`` memory-maps it (``qformer run --mmap``), for a blob larger than the memory
    available: then the file must not change while the model is used.

    Raises ``qformer.FileError`` (missing or unreadable file) or ``qformer.BlobError`` (not a
    valid blob), with the CLI's message.
    """

    def __init__(self, path: PathLike, *, mmap: bool = False) -> None:
        self._m = _native.Model(os.fspath(path), bool(mmap))

    @property
    def path(self) -> str:
        """The blob's path."""
        return os.fspath(self._m.path)

    @property
    def config(self) -> Dict[str, Any]:
        """The blob's config: ``num_layers``, ``hidden``, ``num_heads``, ``intermediate``,
        ``activation``, ``cross_attention_frequency``, ``encoder_hidden`` (d_v),
        ``num_queries`` (N), ``max_image_tokens``, ``projection_dim`` (0: no projection),
        ``layer_norm_eps``, ``max_text_tokens``, ``vocab_size`` (0 without text parts) and
        ``has_text`` (InstructBLIP)."""
        return self._m.config

    @property
    def precision(self) -> str:
        """``"f32"``, ``"fp16"`` or ``"int8"``."""
        return self._m.precision

    @property
    def arena_bytes(self) -> int:
        """Bytes of working memory one forward needs (the blob's arena plan)."""
        return self._m.arena_bytes

    @property
    def blob_bytes(self) -> int:
        """Size of the blob in bytes."""
        return self._m.blob_bytes

    @property
    def kernels(self) -> Dict[str, str]:
        """The kernels detected for this CPU: ``q8`` (int8 GEMM), ``float`` (f32/fp16 GEMM),
        ``quant`` (activation quantizer), e.g. ``{"q8": "avx512vnni_gemm_q8_16x8", ...}``."""
        return self._m.kernels

    def report(self) -> str:
        """What ``qformer inspect`` prints: config, bytes per dtype, arena plan."""
        return self._m.report()

    def tokenize(self, text: str) -> List[int]:
        """InstructBLIP: ``text`` as token ids (``[CLS] ... [SEP]``) with the blob's own
        vocabulary, as transformers' ``BertTokenizer`` gives them, truncated to
        ``max_text_tokens``. Raises ``qformer.InputError`` for a blob without text parts."""
        ids, _ = self._m.tokenize(text)
        return ids

    def run(
        self,
        image_embeds: Any,
        prompt: Optional[str] = None,
        input_ids: Any = None,
        attention_mask: Any = None,
        threads: Optional[int] = None,
    ) -> Dict[str, np.ndarray]:
        """Runs the Q-Former on image features; what ``qformer run`` computes, byte for byte.

        Arguments:
            image_embeds: the vision encoder's output, ``[M, d_v]`` or ``[B, M, d_v]``,
                float32 or float16, C-contiguous: a numpy array, or a torch tensor (or any
                array) through DLPack or ``__array__`` (on the CPU, without gradient).
            prompt: InstructBLIP: one instruction for every image, tokenized with the blob's
                own vocabulary (the ids transformers' tokenizer gives), truncated to the blob's
                ``max_text_tokens`` with a ``qformer.QformerWarning``.
            input_ids: InstructBLIP: token ids instead of ``prompt``, ``[B, T]`` or ``[T]``
                (one row per image, or one for all), int64 or int32, as
                ``InstructBlipProcessor`` makes ``qformer_input_ids``.
            attention_mask: with ``input_ids``: the same shape, 1 attended, 0 padding
                (int64, int32, uint8 or bool); all ones when left out.
            threads: worker threads (``None`` or 0: one per core; at most
                ``qformer.MAX_THREADS``). The output does not depend on it.

        Returns:
            ``{"qformer_output": [B, N, d], "projected": [B, N, d_llm]}``, float32 numpy arrays
            (``B`` = 1 for ``[M, d_v]`` input; ``projected`` only when the blob has a language
            projection). The arrays own the buffers the forward wrote (no copy); the input is
            read once into float32 before the computation, which runs with the GIL released.

        Without an instruction an InstructBLIP blob runs the queries alone (as transformers'
        ``InstructBlipQFormerModel`` does without ``input_ids``), with a
        ``qformer.QformerWarning``.

        Raises:
            qformer.InputError: wrong dtype, shape, width (``d_v``) or token count, a
                non-contiguous array, NaN or infinite features, bad token ids or mask, an
                instruction for a blob without text parts, ``prompt`` and ``input_ids``
                together, too many threads; the message names the problem.
        """
        x = _as_numpy(image_embeds, "image_embeds")
        ids = _as_numpy(input_ids, "input_ids")
        mask = _as_numpy(attention_mask, "attention_mask")
        if prompt is not None and not isinstance(prompt, str):
            raise InputError(f"prompt is a {type(prompt).__name__}, not a str")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)):
            raise InputError(f"threads is a {type(threads).__name__}, not an int")
        out, notes = self._m.run(x, prompt, ids, mask, threads)
        _warn(notes)
        return out

    def __repr__(self) -> str:
        return repr(self._m)


def quantize(
    src_dir: PathLike,
    dst_path: PathLike,
    dtype: str = "int8",
    *,
    config: Optional[PathLike] = None,
    group: int = 32,
    max_image_tokens: Optional[int] = None,
    tokenizer: Optional[PathLike] = None,
    max_text_tokens: Optional[int] = None,
    progress: bool = False,
) -> Dict[str, Any]:
    """Quantizes a checkpoint into a blob; what ``quantize SRC -o DST --dtype DTYPE`` does.

    Arguments (the CLI's options):
        src_dir: Hugging Face directory (config.json + model.safetensors, or sharded with
            model.safetensors.index.json) of BLIP-2, InstructBLIP (with qformer_tokenizer/) or
            MiniGPT-4, or one .safetensors file (LAVIS names: give ``config``).
        dst_path: the blob to write, through a temporary file and a rename (a failure never
            leaves a partial blob; a checkpoint file as output is refused).
        dtype: ``"f32"``, ``"fp16"`` or ``"int8"``.
        config: ``--config``: the config file when there is no config.json beside the weights.
        group: ``--group``: int8 group size (a non-zero multiple of 16, at most 2^20).
        max_image_tokens: ``--max-image-tokens``: image tokens to plan the arena for.
        tokenizer: ``--tokenizer``: InstructBLIP's Q-Former tokenizer directory.
        max_text_tokens: ``--max-text-tokens``: InstructBLIP's longest instruction.
        progress: progress bars on stderr (``quantize`` without ``--quiet``).

    Returns:
        ``{"path", "dtype", "parameters", "blob_bytes", "arena_bytes", "report"}``
        (``report``: the summary ``quantize`` prints).

    Raises:
        qformer.CheckpointError, qformer.FileError, qformer.InputError (bad ``dtype`` or
        ``group``), with the CLI's messages.
    """
    if not isinstance(dtype, str):
        raise InputError(f"dtype is a {type(dtype).__name__}, not a str")
    for name, v in (("group", group), ("max_image_tokens", max_image_tokens), ("max_text_tokens", max_text_tokens)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**32):
            raise InputError(f"{name}={v!r} is not a whole number from 0 to 2^32 - 1")
    fs = lambda p: None if p is None else os.fspath(p)  # noqa: E731
    return _native.quantize(
        os.fspath(src_dir),
        os.fspath(dst_path),
        dtype,
        fs(config),
        group,
        max_image_tokens,
        fs(tokenizer),
        max_text_tokens,
        bool(progress),
    )


def verify(
    model: PathLike,
    reference: PathLike,
    image_embeds: Any,
    prompt: Optional[str] = None,
    input_ids: Any = None,
    attention_mask: Any = None,
    *,
    config: Optional[PathLike] = None,
    tokenizer: Optional[PathLike] = None,
    min_cosine: Optional[float] = None,
    progress: bool = False,
) -> List[Dict[str, Any]]:
    """Compares a blob with the fp32 reference computed from the checkpoint it was made from;
    what ``qformer verify MODEL --reference REF --input IN`` computes, as data.

    Arguments:
        model: the blob.
        reference: the checkpoint it was made from (directory or .safetensors file).
        image_embeds: image features as for ``Model.run`` (an array), or the path of an input
            file as for ``qformer verify --input`` (safetensors with ``image_embeds`` and,
            InstructBLIP, ``qformer_input_ids``/``qformer_attention_mask``; or .npy).
        prompt, input_ids, attention_mask: InstructBLIP's instruction, as for ``Model.run``.
        config, tokenizer: ``--config``, ``--tokenizer`` of ``qformer verify``.
        min_cosine: when given, raise ``qformer.VerificationError`` (the table in ``.table``)
            if the cosine of ``qformer_output`` or ``projected`` is below it, as ``qformer
            verify --min-cosine`` fails; ``None``: no check.
        progress: progress bars on stderr while the checkpoint is read.

    Returns:
        The per-layer table, one dict per row: ``{"name", "cosine", "max_abs", "rms"}`` for
        ``"input norm"``, ``"layer 0"`` ... ``"layer L-1"``, ``"qformer_output"`` and, with a
        projection, ``"projected"``.
    """
    path = None
    arrays = None
    if isinstance(image_embeds, (str, os.PathLike)):
        path = os.fspath(image_embeds)
        if input_ids is not None or attention_mask is not None:
            raise InputError("input_ids and attention_mask go with an array; an input file carries its own")
    else:
        arrays = _as_numpy(image_embeds, "image_embeds")
        input_ids = _as_numpy(input_ids, "input_ids")
        attention_mask = _as_numpy(attention_mask, "attention_mask")
    if min_cosine is not None:
        min_cosine = float(min_cosine)
    fs = lambda p: None if p is None else os.fspath(p)  # noqa: E731
    _precision, _batch, _tokens, table, notes, failure = _native.verify(
        os.fspath(model),
        os.fspath(reference),
        arrays,
        path,
        prompt,
        input_ids,
        attention_mask,
        fs(config),
        fs(tokenizer),
        min_cosine,
        bool(progress),
    )
    _warn(notes)
    if failure is not None:
        raise VerificationError(failure, table)
    return table
