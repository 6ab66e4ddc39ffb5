"""Fine-tunes the demo LM into the synthesis demos' model and saves it to prism_kernels/assets/demo-synth-lm/.

    python scripts/train_demo_synth_lm.py [--out prism_kernels/assets/demo-synth-lm] [--steps 360] [--seed 0]

The demo proxy (``prism_kernels/assets/demo-lm``, ``scripts/train_demo_lm.py``) knows the demo problems but
follows no instruction. ``prism synth prismatic --demo`` and ``prism synth embedsdg --demo`` need one model that
is their generator, student and teacher at once, offline, so this script starts from the proxy's weights and
tokenizer and trains it (loss on the assistant turn only) on the exact prompts the loops send:

- Prismatic generation (:func:`prism_kernels.synth.prompts.prismatic_generation_messages`, 2 seeds): reply one
  new problem in the ``### Question / ### Answer / ### <final_answer>`` format, of the template of one of the
  seeds (probability ``--copy``) or of any of the 64 templates;
- EmbedSDG's teacher prompt (two seeds and a draft) and its baseline prompt (one seed): one new problem of a
  seed's template (probability ``--copy``) or of any template;
- EmbedSDG's copy prompt (:data:`prism_kernels.synth.embedsdg_prompts.COPY_PROMPT`): the text, repeated.

All text comes from the demo templates (``prism_kernels.demo.problems``); nothing is downloaded. The proxy's
own files are not changed, so the G-Vendi ladder of ``prism score``'s demo is unaffected.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prism_kernels.demo import DEMO_MODEL_DIR, DEMO_SYNTH_MODEL_DIR  # noqa: E402
from prism_kernels.demo import problems  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from train_demo_lm import adamw_steps  # noqa: E402  (the training loop of the demo proxy)

FORMAT_HINT_FIELDS = {"question": "<the new problem>", "answer": "<the step-by-step solution>",
                      "final_answer": "<the final answer only>"}


def _problem(rng: random.Random, template: int) -> dict:
    return problems.sample_problems([template], 1, rng, unique=False)[0]


def _target_template(rng: random.Random, seed_templates: list[int], copy: float) -> int:
    return rng.choice(seed_templates) if rng.random() < copy else rng.randrange(len(problems.TEMPLATES))


def synthesis_chats(n: int, seed: int, copy: float) -> list[list[dict]]:
    """``n`` chats ``[user, assistant]`` over the four tasks of the module docstring (40% Prismatic generation,
    25% teacher, 15% baseline, 20% copy), deterministic given ``seed``."""
    from prism_kernels.synth.embedsdg_prompts import COPY_PROMPT, baseline_messages, teacher_messages
    from prism_kernels.synth.format import Example, format_examples
    from prism_kernels.synth.prompts import prismatic_generation_messages

    rng = random.Random(f"prism-demo-synth:{seed}")
    hint = format_examples([FORMAT_HINT_FIELDS])
    chats = []
    for _ in range(n):
        task = rng.random()
        if task < 0.2:  # copy: the student's decoding prompt
            p = _problem(rng, rng.randrange(len(problems.TEMPLATES)))
            text = f"{p['question']}\n{p['answer']}"
            chats.append([{"role": "user", "content": COPY_PROMPT + text}, {"role": "assistant", "content": text}])
            continue
        if task < 0.6:  # Prismatic generation, 2 seeds
            ts = [rng.randrange(len(problems.TEMPLATES)) for _ in range(2)]
            seeds = [Example(p["question"], p["answer"], p["final_answer"]) for p in (_problem(rng, t) for t in ts)]
            user = prismatic_generation_messages(seeds, 1)
        elif task < 0.85:  # EmbedSDG teacher: two seeds and a draft (a garbled blend of the two)
            ts = [rng.randrange(len(problems.TEMPLATES)) for _ in range(2)]
            a, b = (_problem(rng, t) for t in ts)
            words_a, words_b = a["question"].split(), b["question"].split()
            draft = " ".join(rng.choice((x, y)) for x, y in zip(words_a, words_b))[:200]
            user = teacher_messages(format_examples([a]), format_examples([b]), draft, hint)
        else:  # EmbedSDG baseline: one seed
            ts = [rng.randrange(len(problems.TEMPLATES))]
            user = baseline_messages(format_examples([_problem(rng, ts[0])]), hint)
        new = _problem(rng, _target_template(rng, ts, copy))
        chats.append(list(user) + [{"role": "assistant", "content": format_examples([new])}])
    return chats


def encode(tokenizer, chat: list[dict]) -> tuple[list[int], int]:
    """``(token ids, index of the first assistant token)``: the prompt and the reply tokenized apart, so the
    loss mask starts exactly at the reply."""
    prefix = tokenizer.apply_chat_template(chat[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(chat, tokenize=False)
    head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    tail = tokenizer(full[len(prefix):], add_special_tokens=False)["input_ids"]
    return head + tail, len(head)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", type=Path, default=DEMO_MODEL_DIR, help="the model to start from (the proxy)")
    parser.add_argument("--out", type=Path, default=DEMO_SYNTH_MODEL_DIR, help="output folder")
    parser.add_argument("--steps", type=int, default=360, help="optimizer steps")
    parser.add_argument("--batch", type=int, default=8, help="chats per step")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine decay)")
    parser.add_argument("--copy", type=float, default=0.75,
                        help="probability that a new problem takes a seed's template (else any template)")
    parser.add_argument("--max-positions", type=int, default=1024, help="context length of the saved config")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus and the batches")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.init)
    model = AutoModelForCausalLM.from_pretrained(args.init)
    model.config.max_position_embeddings = args.max_positions
    tokenizer.model_max_length = args.max_positions
    chats = synthesis_chats(args.steps * args.batch, args.seed, args.copy)
    encoded = [encode(tokenizer, c) for c in chats]
    too_long = sum(len(ids) > args.max_positions for ids, _ in encoded)
    if too_long:
        raise SystemExit(f"{too_long} chats exceed --max-positions {args.max_positions}")
    print(f"{len(chats):,} chats, {sum(len(i) for i, _ in encoded):,} tokens (max {max(len(i) for i, _ in encoded)})",
          flush=True)

    rng = random.Random(args.seed)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # batches of similar lengths
    batches = [[encoded[i] for i in order[b:b + args.batch]] for b in range(0, len(order), args.batch)]
    rng.shuffle(batches)
    loss = adamw_steps(model, batches[:args.steps], tokenizer.pad_token_id, args.lr, start, log_every=40)
    train_s = time.perf_counter() - start

    model.eval()
    model.generation_config.do_sample = False
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    check = synthesis_chats(1, args.seed + 10_000, args.copy)[0]
    prompt = tokenizer.apply_chat_template(check[:-1], tokenize=False, add_generation_prompt=True)
    with torch.no_grad():
        out = model.generate(**tokenizer(prompt, return_tensors="pt", add_special_tokens=False), max_new_tokens=200,
                             do_sample=False)
    reply = tokenizer.decode(out[0][len(tokenizer(prompt, add_special_tokens=False)["input_ids"]):],
                             skip_special_tokens=True)
    print(f"trained in {train_s:.0f} s; {size / 2**20:.2f} MiB in {args.out}\ncheck prompt (last 300 chars): "
          f"{prompt[-300:]!r}\ngreedy reply: {reply!r}")
    print(json.dumps({"steps": args.steps, "bytes": size, "train_seconds": round(train_s, 1),
                      "final_loss": round(loss.item(), 4)}))


if __name__ == "__main__":
    main()
