"""transformers integration: a qformer blob in place of the Q-Former of a loaded
``Blip2ForConditionalGeneration`` or ``InstructBlipForConditionalGeneration``, so that
``model.generate(...)`` runs end to end with qformer computing the Q-Former.

Needs torch and transformers (not dependencies of qformer: ``pip install torch transformers``)::

    from transformers import Blip2ForConditionalGeneration
    import qformer, qformer.hf
    model = Blip2ForConditionalGeneration.from_pretrained("blip2-dir")
    qformer.quantize("blip2-dir", "blip2-int8.qfb", dtype="int8")
    qformer.hf.swap_qformer(model, "blip2-int8.qfb")
    ids = model.generate(pixel_values=..., input_ids=..., max_new_tokens=20)

The vision encoder, the language projection and the language model stay transformers'; the
Q-Former's query outputs come from the blob (``Model.run``), on the CPU, GIL released.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import os

from . import InputError, Model

__all__ = ["QformerModule", "swap_qformer"]


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - the module is only useful with torch
        raise ImportError("qformer.hf needs torch and transformers: pip install torch transformers") from e
    return torch


def _base():
    return _torch().nn.Module


class QformerModule(_base()):  # type: ignore[misc]
    """A ``torch.nn.Module`` with the call signature transformers' ``Blip2QFormerModel`` and
    ``InstructBlipQFormerModel`` are called with by the ``ForConditionalGeneration`` models
    (``query_embeds``, ``encoder_hidden_states``, ``encoder_attention_mask``, and InstructBLIP's
    ``input_ids``/``attention_mask``), computing the query outputs with a qformer blob.

    The blob carries its own query tokens: ``query_embeds`` must have the blob's shape
    ``[B, N, d]`` and is otherwise not read. An image attention mask other than all ones is
    refused (the Q-Former attends every image token). The output is ``last_hidden_state``
    ``[B, N, d]`` (float32, on the device of ``encoder_hidden_states``): the query positions,
    which is all the ``ForConditionalGeneration`` models read of it.
    """

    def __init__(self, model: Model, config: Any = None, threads: Optional[int] = None) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.threads = threads

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        position_ids: Any = None,
        query_embeds: Any = None,
        encoder_hidden_states: Any = None,
        encoder_attention_mask: Any = None,
        return_dict: Optional[bool] = None,
        **kwargs: Any,
    ) -> Any:
        torch = _torch()
        from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

        c = self.model.config
        n, d = c["num_queries"], c["hidden"]
        if encoder_hidden_states is None:
            raise InputError("the qformer Q-Former needs encoder_hidden_states (the image features)")
        if query_embeds is None or tuple(query_embeds.shape[1:]) != (n, d):
            shape = None if query_embeds is None else tuple(query_embeds.shape)
            raise InputError(f"query_embeds has shape {shape}; the blob's query tokens are [B, {n}, {d}]")
        if position_ids is not None:
            raise InputError("position_ids are not supported by the qformer Q-Former")
        if encoder_attention_mask is not None and not bool(torch.all(encoder_attention_mask == 1)):
            raise InputError("encoder_attention_mask masks image tokens: the qformer Q-Former attends all of them")
        x = encoder_hidden_states.detach().to("cpu")
        if x.dtype not in (torch.float32, torch.float16):
            x = x.to(torch.float32)
        ids = mask = None
        if input_ids is not None:
            ids = input_ids.detach().to("cpu").contiguous().numpy()
            if attention_mask is not None:
                m = attention_mask.detach().to("cpu")
                # InstructBLIP passes the queries' mask (all ones) and the instruction's, joined.
                if m.shape[-1] == n + ids.shape[-1]:
                    if not bool(torch.all(m[..., :n] == 1)):
                        raise InputError("attention_mask masks query positions: not supported")
                    m = m[..., n:]
                mask = m.contiguous().numpy()
        out = self.model.run(x.contiguous().numpy(), input_ids=ids, attention_mask=mask, threads=self.threads)
        hidden = torch.from_numpy(out["qformer_output"]).to(encoder_hidden_states.device)
        if return_dict is False:
            return (hidden, None)
        return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=hidden, pooler_output=None)


def swap_qformer(hf_model: Any, blob: Union[Model, str, "os.PathLike[str]"], *, threads: Optional[int] = None) -> Any:
    """Puts ``blob`` (a ``qformer.Model`` or a blob's path) in place of ``hf_model.qformer``
    and returns the module it replaced (assign it back to undo).

    ``hf_model`` is a ``Blip2ForConditionalGeneration`` (the blob made from a BLIP-2
    checkpoint) or an ``InstructBlipForConditionalGeneration`` (a blob with text parts). The
    blob must fit the model: its queries, width and image feature width are checked against
    ``hf_model.query_tokens`` and the vision config; a mismatch raises ``qformer.InputError``.
    """
    model = blob if isinstance(blob, Model) else Model(blob)
    name = type(hf_model).__name__
    if name not in ("Blip2ForConditionalGeneration", "InstructBlipForConditionalGeneration"):
        raise InputError(
            f"{name} is not supported: give a Blip2ForConditionalGeneration or InstructBlipForConditionalGeneration"
        )
    c = model.config
    instruct = name.startswith("InstructBlip")
    if instruct != c["has_text"]:
        what = "has no text parts (a BLIP-2 or MiniGPT-4 blob)" if instruct else "has InstructBLIP text parts"
        raise InputError(f"{model.path} {what}: it does not fit a {name}")
    _, n, d = tuple(hf_model.query_tokens.shape)
    dv = hf_model.config.vision_config.hidden_size
    if (n, d, dv) != (c["num_queries"], c["hidden"], c["encoder_hidden"]):
        raise InputError(
            f"{model.path} has {c['num_queries']} queries of width {c['hidden']} over {c['encoder_hidden']}-wide image "
            f"features; the model has {n} of width {d} over {dv}"
        )
    old = hf_model.qformer
    hf_model.qformer = QformerModule(model, getattr(old, "config", None), threads)
    return old
