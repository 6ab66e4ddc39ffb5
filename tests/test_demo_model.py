"""The proxy LM shipped in prism_kernels/assets/demo-lm: loads offline through the real from_pretrained
path, has a Qwen-style chat template, fits the size budget, and has learnt the demo's answers."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from prism_kernels.demo import DEMO_MODEL_DIR, problems

transformers = pytest.importorskip("transformers")

FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "chat_template.jinja",
         "README.md")


@pytest.fixture(scope="module")
def proxy():
    tokenizer = transformers.AutoTokenizer.from_pretrained(DEMO_MODEL_DIR, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR, local_files_only=True).eval()
    return tokenizer, model


def test_files_and_size():
    for name in FILES:
        assert (DEMO_MODEL_DIR / name).is_file(), f"{name} missing from {DEMO_MODEL_DIR}"
    size = sum(f.stat().st_size for f in DEMO_MODEL_DIR.iterdir() if f.is_file())
    assert size <= 20 * 2**20, f"the shipped model takes {size / 2**20:.1f} MiB (budget 20)"


def test_loads_with_chat_template(proxy):
    tokenizer, model = proxy
    assert model.config.model_type == "qwen2"
    assert model.get_input_embeddings().num_embeddings >= len(tokenizer)
    assert tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") in ids and tokenizer.eos_token_id in ids
    assert tokenizer.decode(ids) == prompt


def answer_loss(model, tokenizer, rows) -> float:
    """Mean next-token loss on the answer tokens (after the generation prompt) of ``rows``."""
    losses = []
    for row in rows:
        messages = problems.to_messages(row)
        prefix = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        tail = tokenizer(full[len(prefix):], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([head + tail])
        labels = ids.clone()
        labels[0, :len(head)] = -100
        with torch.no_grad():
            losses.append(model(input_ids=ids, labels=labels).loss.item())
    return sum(losses) / len(losses)


def test_has_learnt_the_demo_answers(proxy):
    """On fresh problems (a draw the training never used), the answer loss is far below that of a freshly
    initialised model of the same config (about ln(vocab)): the shipped weights are trained."""
    tokenizer, model = proxy
    rows = problems.demo_ladder(64, (64,), seed=987)[64][:16]
    torch.manual_seed(0)
    fresh = transformers.AutoModelForCausalLM.from_config(model.config).eval()
    trained, untrained = answer_loss(model, tokenizer, rows), answer_loss(fresh, tokenizer, rows)
    assert untrained > 0.9 * math.log(len(tokenizer))
    assert trained < 0.4 * untrained, (trained, untrained)
