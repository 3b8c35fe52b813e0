"""Where a training step's time goes, and what the training settings buy: the default model's
training steps on CoNLL-2003 train sentences, split into batch encoding (tokenizer, span
enumeration), forward, loss, backward, gradient clipping and the optimizer step, plus one epoch's
augmentation and one dev evaluation; for the shipped settings (fused AdamW), for those with the
encoder's sub-word table frozen as well (an option, not the default: it cost dev F1), and for
AdamW's per-parameter loop, in turn, the same batches for each.

    python -m benchmarks.training_speed [--steps 40] [--threads 2] [--rounds 2]
"""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from typing import Any

from benchmarks.common import argument_parser, markdown_table, write_results

PHASES = ("encode", "forward", "loss", "backward", "clip", "optimizer")
SETTINGS = {
    "shipped": {},
    "sub-word table frozen too (not the default)": {"freeze_word_embeddings": True},
    "before (AdamW loop)": {"fused": False},
}
BEFORE = "before (AdamW loop)"


def parse_args():
    parser = argument_parser(__doc__, data_dir=True, out="training_speed")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per setting and round")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the main job trains with every core)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the settings in turn (the faster counts)")
    return parser.parse_args()


def trainer_for(settings: dict[str, Any], train, dev, threads: int):
    """A :class:`Trainer` of the default configuration, changed as ``settings`` says."""
    import tempfile

    import torch

    from linkner.model.training import TrainConfig, Trainer

    config = TrainConfig(threads=threads, progress=False,
                         freeze_word_embeddings=settings.get("freeze_word_embeddings", False))
    trainer = Trainer(config, train, dev, tempfile.mkdtemp(prefix="linkner-train-speed-"))
    if settings.get("fused") is False:
        groups = [{"params": group["params"], "lr": group["lr"]} for group in trainer.optimizer.param_groups]
        trainer.optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay, foreach=False, fused=False)
    return trainer


def time_steps(trainer, batches) -> dict[str, float]:
    """Seconds per phase over ``batches`` (the first two are a warm-up, not counted)."""
    import torch

    from linkner.model.span_model import span_loss

    spent: dict[str, float] = defaultdict(float)
    trainer.model.train()
    for step, sentences in enumerate(batches):
        marks = [time.perf_counter()]
        batch = trainer.batcher.encode(sentences, with_labels=True).to(trainer.device)
        marks.append(time.perf_counter())
        logits = trainer.model(batch)
        marks.append(time.perf_counter())
        loss = span_loss(logits, batch.span_labels, trainer.model_config, trainer.config.outside_weight, 0.1)
        marks.append(time.perf_counter())
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(trainer.trained_parameters, 1.0)
        marks.append(time.perf_counter())
        trainer.optimizer.step()
        marks.append(time.perf_counter())
        if step >= 2:
            for phase, start, end in zip(PHASES, marks, marks[1:]):
                spent[phase] += end - start
    return dict(spent)


def main() -> int:
    args = parse_args()
    from linkner.data.readers import read_dataset
    from linkner.model.training import length_bucketed_batches

    train = read_dataset(args.data_dir / "train.txt")
    dev = read_dataset(args.data_dir / "dev.txt")
    rows: dict[str, dict[str, Any]] = {}
    for round_ in range(args.rounds):
        for name, settings in SETTINGS.items():
            print(f"round {round_ + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            trainer = trainer_for(settings, train, dev, args.threads)
            augmented = trainer.augmenter.epoch(trainer.train, 1)
            order = length_bucketed_batches(augmented, trainer.config.batch_size, random.Random(1))[: args.steps + 2]
            spent = time_steps(trainer, [[augmented[i] for i in indices] for indices in order])
            sentences = sum(len(indices) for indices in order[2:])
            total = sum(spent.values())
            best = rows.get(name)
            if best is None or total < best["step_s"] * args.steps:
                rows[name] = {**(best or {}), "sentences_per_s": sentences / total, "step_s": total / args.steps,
                              "phases_s": {phase: spent[phase] / args.steps for phase in PHASES}}
            if round_ == 0 and name == "shipped":
                started = time.perf_counter()
                trainer.augmenter.epoch(trainer.train, 2)
                rows[name]["augment_epoch_s"] = time.perf_counter() - started
                started = time.perf_counter()
                trainer.dev_f1()
                rows[name]["dev_evaluation_s"] = time.perf_counter() - started
    shipped = rows["shipped"]
    for row in rows.values():
        row["x_before"] = row["sentences_per_s"] / rows[BEFORE]["sentences_per_s"]
    epoch_steps = -(-len(train) // 32)
    report = {"threads": args.threads, "steps": args.steps, "train_sentences": len(train), "settings": rows,
              "epoch_estimate_s": {name: row["step_s"] * epoch_steps for name, row in rows.items()}}
    headers = ["settings", "sentences/s", "x before", *[f"{phase} ms" for phase in PHASES], "epoch (estimate) min"]
    lines = [[name, f"{row['sentences_per_s']:.1f}", f"{row['x_before']:.2f}",
              *[f"{1000 * row['phases_s'][phase]:.0f}" for phase in PHASES],
              f"{row['step_s'] * epoch_steps / 60:.1f}"] for name, row in rows.items()]
    table = markdown_table(headers, lines, "l" + "r" * (len(headers) - 1))
    table += (f"\n\nPer step of 32 sentences, {args.threads} torch threads, best of {args.rounds} rounds in turn. "
              f"Once per epoch: augmentation {shipped['augment_epoch_s']:.1f} s, dev evaluation "
              f"({len(dev)} sentences) {shipped['dev_evaluation_s']:.0f} s.\n")
    write_results(args.out, report, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
