"""Loading the proxy LM and its tokenizer from a local folder or the local Hugging Face cache (offline)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .config import path_identity


def _error(msg: str):
    from ..data import DataError

    return DataError(msg)


def resolve_model_dir(name: str) -> Path:
    """The folder holding model ``name``: ``name`` itself when it is a local folder, else its snapshot in
    the local Hugging Face cache. Neither -> DataError saying how to pass a local path."""
    p = Path(os.path.expanduser(name))
    if p.is_dir():
        if not (p / "config.json").exists():
            raise _error(f"--model {name}: the folder has no config.json (expected a model saved with "
                         f"save_pretrained: config.json, weights, tokenizer files)")
        return p.resolve()
    if p.exists():
        raise _error(f"--model {name}: is a file; pass the folder that holds config.json and the weights")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name):  # not a hub id: a path that is not there
        raise _error(f"--model {name}: no such folder")
    try:
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means: not usable offline
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        raise _error(f"--model {name}: not a local folder and not in the Hugging Face cache"
                     f"{' (offline: HF_HUB_OFFLINE=1)' if offline else ''}; download it once where there is "
                     f"network (huggingface-cli download {name}) or pass a local path, e.g. "
                     f"--model /path/to/model (a folder with config.json, weights and tokenizer files)") from None
    return snap


def model_identity(model_dir: str | os.PathLike) -> str:
    """Cheap identity of a model folder (file names, sizes and mtimes)."""
    return path_identity(model_dir)


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(source: str | os.PathLike, trust_remote_code: bool = False):
    """AutoTokenizer from a folder; DataError when it cannot be loaded."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(os.fspath(source), trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _error(f"--tokenizer/--model {source}: cannot load a tokenizer: {first}") from None
    return tok


def load_model(model_dir: str | os.PathLike, device: str, dtype: str, trust_remote_code: bool = False):
    """AutoModelForCausalLM from a folder, in eval mode on ``device`` with ``dtype``; DataError when it
    cannot be loaded (e.g. an architecture that needs --trust-remote-code)."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(os.fspath(model_dir), dtype=torch_dtype(dtype),
                                                     trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "" if trust_remote_code else " (if the model ships its own code, add --trust-remote-code)"
        raise _error(f"--model {model_dir}: cannot load it as a causal LM: {first}{hint}") from None
    return model.to(device).eval()
