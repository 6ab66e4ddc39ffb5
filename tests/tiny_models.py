"""Tiny real tokenizers and causal LMs for the product-layer tests (no downloads).

`tiny_tokenizer` trains a byte-level BPE on GSM8K text read from the shared data (PRISM_SHARED_DATA,
default ../shared/data relative to the repository) and saves it with `save_pretrained`, optionally with
the Qwen2.5 chat template (its text is written below); `tiny_causal_lm` builds a ~50k-parameter Qwen2 or
Llama from a config and saves it next to the tokenizer. Both return what `from_pretrained` loads, so the
tests exercise the same loading path as real models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("PRISM_SHARED_DATA", REPO.parent / "shared" / "data"))
GSM8K_TRAIN = SHARED_DATA / "gsm8k" / "train.jsonl"
GSM8K_TEST = SHARED_DATA / "gsm8k" / "test.jsonl"

# The chat template of Qwen2.5-Instruct without its tool-calling branches (those need `tools`, which the
# product never passes): a default system turn, <|im_start|>role\n...<|im_end|>\n per turn, and
# "<|im_start|>assistant\n" as the generation prompt.
QWEN25_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def gsm8k_records(n: int = 400, path: Path | None = None) -> list[dict]:
    """The first `n` records of GSM8K train (dicts with "question" and "answer")."""
    path = Path(path) if path is not None else GSM8K_TRAIN
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


def tiny_tokenizer(tmp_path, chat_template: bool = True, vocab_size: int = 512, n_texts: int = 400,
                   bos: bool = False):
    """Trains a byte-level BPE on GSM8K questions+answers and saves it as a PreTrainedTokenizerFast.

    With `chat_template=True` it has the Qwen2.5 chat template, eos "<|im_end|>" and pad "<|endoftext|>"
    (as Qwen2.5-Instruct); without, no template and eos = pad = "<|endoftext|>". Returns the tokenizer
    loaded back with `AutoTokenizer.from_pretrained(directory)`; `tokenizer.name_or_path` is the directory
    (tmp_path / "tokenizer-chat" or "tokenizer-plain", with "-bos" appended when `bos`). With `bos=True`
    the tokenizer also has a BOS token "<s>" that it prepends with add_special_tokens=True (Llama style).
    """
    import tokenizers
    import transformers

    records = gsm8k_records(n_texts)
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    specials = SPECIAL_TOKENS + (["<s>"] if bos else [])
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                             show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator((r["question"] + "\n" + r["answer"] for r in records), trainer)
    path = Path(tmp_path) / (("tokenizer-chat" if chat_template else "tokenizer-plain") + ("-bos" if bos else ""))
    kwargs = dict(tokenizer_object=bpe, pad_token="<|endoftext|>", padding_side="left")
    if bos:
        bpe.post_processor = tokenizers.processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bpe.token_to_id("<s>"))])
        kwargs["bos_token"] = "<s>"
    if chat_template:
        tok = transformers.PreTrainedTokenizerFast(eos_token="<|im_end|>", **kwargs)
        tok.chat_template = QWEN25_CHAT_TEMPLATE
    else:
        tok = transformers.PreTrainedTokenizerFast(eos_token="<|endoftext|>", **kwargs)
    tok.save_pretrained(path)
    return transformers.AutoTokenizer.from_pretrained(path)


def tiny_causal_lm(tmp_path, tokenizer, arch: str = "qwen2", hidden_size: int = 32, num_layers: int = 2,
                   max_positions: int = 512, seed: int = 0, name: str | None = None) -> Path:
    """Builds a tiny causal LM ("qwen2" or "llama") for `tokenizer`, saves model + tokenizer with
    `save_pretrained` into one directory and returns it (loadable by AutoModelForCausalLM / AutoTokenizer).
    """
    import torch
    import transformers

    common = dict(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                  num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=max_positions, tie_word_embeddings=True,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if arch == "qwen2":
        cfg = transformers.Qwen2Config(**common)
    elif arch == "llama":
        cfg = transformers.LlamaConfig(**common)
    else:
        raise ValueError(f"arch must be 'qwen2' or 'llama', got {arch!r}")
    path = Path(tmp_path) / (name or f"tiny-{arch}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
