"""GradientSketcher on real text: GSM8K samples (read from PRISM_SHARED_DATA, default ../shared/data
relative to the repository; skipped if absent), a BPE tokenizer trained on them, and a tiny Qwen2;
tokenizer and model saved and reloaded through from_pretrained. Each sample's sketch equals the
sketch of its own one-sample gradient."""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import prism_kernels as pk
from prism_kernels import _backends

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("PRISM_SHARED_DATA", REPO.parent / "shared" / "data")) / "gsm8k" / "train.jsonl"
pytestmark = [pytest.mark.skipif(not DATA.exists(), reason=f"GSM8K not found at {DATA} (set PRISM_SHARED_DATA)"),
              pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    with open(DATA) as f:
        records = [json.loads(line) for _, line in zip(range(400), f)]
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=384, special_tokens=["<pad>", "<eos>"], show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator((r["question"] + "\n" + r["answer"] for r in records), trainer)
    path = tmp_path_factory.mktemp("gsm8k_qwen2")
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>",
                                         padding_side="left").save_pretrained(path)
    cfg = transformers.Qwen2Config(vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   tie_word_embeddings=True, pad_token_id=0)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    return records[:5], tokenizer, model


def test_gsm8k_batch_matches_one_sample_gradients(setup):
    records, tokenizer, model = setup
    # Ragged lengths: cut each sample; the response starts after the question (or at its last 10
    # tokens when the cut falls inside the question).
    rows, starts = [], []
    for r, cut in zip(records, (70, 50, 90, 60, 80)):
        prompt = tokenizer("Question: " + r["question"] + "\nAnswer: ")["input_ids"]
        tokens = (prompt + tokenizer(r["answer"])["input_ids"])[:cut]
        rows.append(tokens)
        starts.append(min(len(prompt), len(tokens) - 10))
    batch = tokenizer.pad({"input_ids": rows}, return_tensors="pt")  # left padding (the tokenizer's side)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert tokenizer.padding_side == "left" and (mask[:, 0] == 0).any()
    labels = ids.clone()
    for b, n in enumerate(starts):
        pad = ids.shape[1] - len(rows[b])
        labels[b, : pad + n] = -100
    sketcher = pk.GradientSketcher(model, k=128, kind="sparse", seed=11)
    sketches, finite = sketcher.sketch(ids, mask, labels=labels)
    assert finite.all()
    for b in (0, 3):
        keep = mask[b].bool()
        tokens, lab = ids[b, keep], labels[b, keep]
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=tokens[None]).logits[0, :-1]
        valid = lab[1:] != -100
        torch.nn.functional.cross_entropy(logits[valid], lab[1:][valid]).backward()
        expected = torch.zeros(128)
        for name, p in model.named_parameters():
            expected += pk.sketch(p.grad.reshape(1, -1), 128, "sparse", 11, pk.param_block(name))[0]
        assert (sketches[b] - expected).norm() <= 2e-4 * expected.norm()
