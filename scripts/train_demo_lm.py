"""Trains the demo's proxy LM and saves it to prism_kernels/assets/demo-lm/ (the shipped model).

    python scripts/train_demo_lm.py [--out prism_kernels/assets/demo-lm] [--steps 240] [--seed 0] [--verify]
    python scripts/train_demo_lm.py --verify-only [--verify-rows 128] [--verify-seeds 0,1,2]

What it does, all on CPU with 2 threads and offline:
1. draws the training corpus from prism_kernels.demo.problems (all 64 templates, seeded) and renders each
   problem as a chat (user = question, assistant = worked answer) with a Qwen-style template
   (<|im_start|>role ... <|im_end|>);
2. trains a byte-level BPE tokenizer on that text with the `tokenizers` package (digits split one by
   one, as Qwen does) and wraps it as a PreTrainedTokenizerFast with the chat template, eos <|im_end|>
   and pad <|endoftext|>;
3. trains a small Qwen2 (transformers config; tied embeddings) with AdamW on the rendered chats
   (next-token loss on every non-padding token), deterministic given --seed;
4. saves config.json, generation_config.json, model.safetensors (fp32) and the tokenizer files, and
   prints the parameter count, the size on disk, the training time and one greedy answer.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prism_kernels.demo import DEMO_MODEL_DIR  # noqa: E402
from prism_kernels.demo import problems  # noqa: E402

# Qwen2.5's chat format without its default system prompt (the demo data has none).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE trained on ``texts``, wrapped as a PreTrainedTokenizerFast with the chat template."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = tokenizers.Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"], chat_template=CHAT_TEMPLATE,
                                   padding_side="right", model_max_length=512)


def build_model(vocab_size: int, tokenizer, hidden: int, layers: int, seed: int):
    """A small Qwen2 from a config (tied embeddings), initialised from ``seed``."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=3 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=True, rope_theta=10000.0,
                      bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEMO_MODEL_DIR, help="output folder")
    parser.add_argument("--steps", type=int, default=240, help="optimizer steps")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine decay)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden size")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers")
    parser.add_argument("--vocab", type=int, default=2048, help="BPE vocabulary size (at most)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus, the initialisation and the batches")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--verify", action="store_true",
                        help="after training, print the G-Vendi ladder for --verify-seeds (the demo's point)")
    parser.add_argument("--verify-only", action="store_true", help="skip training: verify the model in --out")
    parser.add_argument("--verify-rows", type=int, default=128, help="problems per subset for --verify")
    parser.add_argument("--verify-seeds", default="0,1,2", help="comma-separated seeds of the subsets' draw")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.verify_only:
        train(args)
    if args.verify or args.verify_only:
        verify(args.out, args.verify_rows, [int(s) for s in args.verify_seeds.split(",")])


def verify(model_dir: Path, rows: int, seeds: list[int]) -> bool:
    """Prints G-Vendi of the ladder subsets for each seed and whether each rises strictly."""
    start = time.perf_counter()
    ok = True
    for seed in seeds:
        values = ladder_gvendi(model_dir, rows=rows, seeds=(seed,))[seed]
        rises = all(b > a for a, b in zip(values, values[1:]))
        ok &= rises
        print(f"ladder seed {seed}, {rows} rows per subset: " + " < ".join(f"{v:.2f}" for v in values)
              + ("  rises strictly" if rises else "  DOES NOT RISE STRICTLY"), flush=True)
    print(f"verified in {time.perf_counter() - start:.0f} s: {'OK' if ok else 'FAILED'}")
    return ok


def train(args) -> None:
    """Corpus -> tokenizer -> model -> AdamW steps -> files in ``args.out`` (see the module docstring)."""
    start = time.perf_counter()

    corpus = problems.training_corpus(args.steps * args.batch, seed=args.seed)
    tokenizer = build_tokenizer([tokenizer_text(p) for p in corpus[:8192]], args.vocab)
    texts = [tokenizer.apply_chat_template(problems.to_messages(p), tokenize=False) for p in corpus]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]  # list of [T_i]
    # Embedding rows rounded up to a multiple of 64 (tokenizer ids stay below len(tokenizer)).
    vocab = (len(tokenizer) + 63) // 64 * 64
    model = build_model(vocab, tokenizer, args.hidden, args.layers, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"corpus {len(corpus):,} chats, {sum(map(len, encoded)):,} tokens (max {max(map(len, encoded))}); "
          f"tokenizer {len(tokenizer):,} tokens; model {n_params:,} parameters")

    # Batches of similar lengths (less padding): shuffle, sort within windows of 64 batches, shuffle batches.
    rng = random.Random(args.seed)
    order = list(range(len(encoded)))
    rng.shuffle(order)
    window = 64 * args.batch
    order = [i for w in range(0, len(order), window) for i in sorted(order[w:w + window], key=lambda i: len(encoded[i]))]
    batches = [order[b:b + args.batch] for b in range(0, len(order), args.batch)]
    rng.shuffle(batches)
    # The loss covers every non-padding token (each row's labels start at 0).
    loss = adamw_steps(model, [[(encoded[i], 0) for i in b] for b in batches[:args.steps]], tokenizer.pad_token_id,
                       args.lr, start, log_every=50)
    train_s = time.perf_counter() - start

    model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file() and f.name != "README.md")

    check = problems.demo_ladder(16, (16,), seed=12345)[16][0]
    prompt = tokenizer.apply_chat_template(problems.to_messages(check)[:1], tokenize=False, add_generation_prompt=True)
    with torch.no_grad():
        out = model.generate(**tokenizer(prompt, return_tensors="pt", add_special_tokens=False), max_new_tokens=120)
    reply = tokenizer.decode(out[0], skip_special_tokens=False)[len(prompt):]
    print(f"trained in {train_s:.0f} s; {n_params:,} parameters; {size / 2**20:.2f} MiB in {args.out}")
    print(f"check question: {check['question']}\nreference: {check['final_answer']}\ngreedy reply: {reply!r}")
    print(json.dumps({"params": n_params, "bytes": size, "train_seconds": round(train_s, 1),
                      "final_loss": round(loss.item(), 4), "vocab": len(tokenizer)}))


def adamw_steps(model, batches: list[list[tuple[list[int], int]]], pad: int, lr: float, start: float,
                log_every: int = 50) -> torch.Tensor:
    """One AdamW step per batch (lr ``lr``, betas 0.9/0.95, weight decay 0.01, 5% linear warm-up then cosine
    decay to 0 over ``len(batches)`` steps, gradient clipping 1.0). A batch is a list of ``(token ids, first
    label)``: rows are right-padded with ``pad`` and the next-token loss covers each row's tokens from index
    ``first`` on. Prints the loss every ``log_every`` steps (time since ``start``); returns the last loss."""
    steps = len(batches)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    for step, rows in enumerate(batches):
        width = max(len(seq) for seq, _ in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        mask = torch.zeros_like(ids)
        for b, (seq, first) in enumerate(rows):
            ids[b, :len(seq)] = torch.tensor(seq)
            mask[b, :len(seq)] = 1
            labels[b, first:len(seq)] = ids[b, first:len(seq)]
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % log_every == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}  lr {sched.get_last_lr()[0]:.2e}  "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    return loss


def render_batch(tokenizer, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chat-rendered problems, right-padded: ``(input_ids [B, T], attention_mask [B, T], labels [B, T])``
    with labels -100 on the prompt (the user turn and the generation prompt) and on padding, so the loss
    covers exactly the answer and its end-of-turn marker."""
    seqs, starts = [], []
    for row in rows:
        messages = problems.to_messages(row)
        prefix = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        tail = tokenizer(full[len(prefix):], add_special_tokens=False)["input_ids"]
        seqs.append(head + tail)
        starts.append(len(head))
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for b, (seq, start) in enumerate(zip(seqs, starts)):
        ids[b, :len(seq)] = torch.tensor(seq)
        mask[b, :len(seq)] = 1
        labels[b, start:len(seq)] = ids[b, start:len(seq)]
    return ids, mask, labels


def ladder_gvendi(model_dir, rows: int = 128, seeds=(0, 1, 2), counts=problems.LADDER, k: int = 1024,
                  batch: int = 32) -> dict[int, list[float]]:
    """G-Vendi (q = 1) of each ladder subset with the model in ``model_dir``, straight from
    ``pk.GradientSketcher`` (rademacher, seed 0, all parameters, loss on the answer tokens) and
    ``pk.VendiState``: ``{seed: [gvendi of the subset from c templates, for c in counts]}``."""
    import prism_kernels as pk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    sketcher = pk.GradientSketcher(model, k=k, kind="rademacher", seed=0)
    out = {}
    for seed in seeds:
        values = []
        for c, subset in problems.demo_ladder(rows, counts, seed=seed).items():
            state = pk.VendiState(k)
            for b in range(0, len(subset), batch):
                ids, mask, labels = render_batch(tokenizer, subset[b:b + batch])
                sketches, finite = sketcher.sketch(ids, mask, labels=labels)
                state.update(sketches[finite])
            values.append(state.score(1))
        out[seed] = values
    return out


def tokenizer_text(problem: dict) -> str:
    """The text the BPE is trained on: the problem's chat rendering without special tokens."""
    return f"user\n{problem['question']}\nassistant\n{problem['answer']}\n"


if __name__ == "__main__":
    main()
