"""Type stub of the Rust extension module ``qformer._native`` (python/src/lib.rs). Use the
``qformer`` package's API (``qformer.Model``, ``qformer.quantize``, ``qformer.verify``), which
wraps these."""

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

__version__: str
MAX_THREADS: int

class Model:
    def __init__(self, path: str, mmap: bool = False) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def mmap(self) -> bool: ...
    @property
    def blob_bytes(self) -> int: ...
    @property
    def arena_bytes(self) -> int: ...
    @property
    def precision(self) -> str: ...
    @property
    def kernels(self) -> Dict[str, str]: ...
    @property
    def config(self) -> Dict[str, Any]: ...
    def report(self) -> str: ...
    def tokenize(self, text: str) -> Tuple[List[int], int]: ...
    def run(
        self,
        image_embeds: np.ndarray,
        prompt: Optional[str] = None,
        input_ids: Optional[np.ndarray] = None,
        attention_mask: Optional[np.ndarray] = None,
        threads: Optional[int] = None,
    ) -> Tuple[Dict[str, np.ndarray], List[str]]: ...

def quantize(
    src: str,
    dst: str,
    dtype: str,
    config: Optional[str],
    group: int,
    max_image_tokens: Optional[int],
    tokenizer: Optional[str],
    max_text_tokens: Optional[int],
    progress: bool,
) -> Dict[str, Any]: ...
def verify(
    model: str,
    reference: str,
    image_embeds: Optional[np.ndarray],
    input_path: Optional[str],
    prompt: Optional[str],
    input_ids: Optional[np.ndarray],
    attention_mask: Optional[np.ndarray],
    config: Optional[str],
    tokenizer: Optional[str],
    min_cosine: Optional[float],
    progress: bool,
) -> Tuple[str, int, int, List[Dict[str, Any]], List[str], Optional[str]]: ...
