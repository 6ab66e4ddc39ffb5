"""The benchmark's model and data: GSM8K samples, a 2,048-token byte-level BPE tokenizer trained on
GSM8K's training text, and a seeded tiny Qwen2 (hidden 256, 4 layers, 4 heads, 2 KV heads,
intermediate 1024, tied embeddings). The GSM8K files are read from PRISM_SHARED_DATA (default
../shared/data relative to the repository); nothing of their text is stored in the repository."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
MAX_TOKENS = 256
VOCAB = 2048


def shared_data() -> Path:
    return Path(os.environ.get("PRISM_SHARED_DATA", REPO.parent / "shared" / "data"))


def gsm8k(split: str = "train") -> list[dict]:
    path = shared_data() / "gsm8k" / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"GSM8K not found at {path}; set PRISM_SHARED_DATA")
    with open(path) as f:
        return [json.loads(line) for line in f]


def train_tokenizer(records: list[dict]):
    """Byte-level BPE with VOCAB tokens trained on the questions and answers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator((r["question"] + "\n" + r["answer"] for r in records), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def tiny_qwen2(seed: int = 0):
    import transformers

    cfg = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_TOKENS,
                                   tie_word_embeddings=True, pad_token_id=0)
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()


def encode(tokenizer, records: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(token ids [T], labels [T] with -100 on the question) per record, T <= MAX_TOKENS."""
    out = []
    for r in records:
        prompt = tokenizer("Question: " + r["question"] + "\nAnswer: ")["input_ids"]
        answer = tokenizer(r["answer"])["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt + answer)[:MAX_TOKENS]
        labels = ([-100] * len(prompt) + answer)[:MAX_TOKENS]
        out.append((torch.tensor(ids), torch.tensor(labels)))
    return out


def pad_batch(samples, side: str = "right"):
    steps = max(len(ids) for ids, _ in samples)
    ids = torch.zeros(len(samples), steps, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for b, (x, y) in enumerate(samples):
        sl = slice(0, len(x)) if side == "right" else slice(steps - len(x), steps)
        ids[b, sl], mask[b, sl], labels[b, sl] = x, 1, y
    return ids, mask, labels
