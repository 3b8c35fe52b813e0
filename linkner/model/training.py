"""Training the span model: length-bucketed batches, dev F1 each epoch, best checkpoint kept,
early stopping, a wall-clock budget, and resumption from the last finished epoch."""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from linkner.data.spans import Sentence, label_set
from linkner.model.augment import MentionAugmenter
from linkner.model.encoders import load_pretrained_encoder, load_tokenizer, resolve_encoder, subword_limit
from linkner.evaluation.scores import entity_scores
from linkner.model.batching import SpanBatcher
from linkner.model.checkpoint import save_checkpoint
from linkner.model.config import Objective, SpanModelConfig
from linkner.model.metadata import STATE_FILE, is_checkpoint, read_metadata, unfinished_training, write_metadata
from linkner.model.span_model import SpanNER, span_loss
from linkner.model.predictor import SpanPredictor, pick_device

log = logging.getLogger(__name__)
RUN_SETTINGS = ("threads", "progress", "device")  # what a resumed run may change


class TrainConfig(BaseModel):
    """Hyper-parameters and run settings of ``linkner train``."""

    model_config = ConfigDict(extra="forbid")

    encoder: str = Field("default", description="'default' (MiniLM-L6) or a local BERT/RoBERTa folder")
    objective: Objective = "cross_entropy"
    epochs: int = Field(7, ge=1)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    lr_encoder: float = Field(5e-5, gt=0)
    lr_head: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    outside_weight: float = Field(0.5, gt=0, description="loss weight of spans whose gold class is O")
    kl_anneal_epochs: float = Field(10.0, gt=0, description="evidential KL weight is min(1, epoch / this)")
    max_span_len: int = Field(8, ge=1, le=64)
    width_dim: int = 32
    casing_dim: int = 16
    hidden_dim: int = 256
    dropout: float = Field(0.2, ge=0, lt=1)
    freeze_word_embeddings: bool = Field(
        False, description="keep the encoder's sub-word embedding table as pre-trained (about half its "
        "parameters: a cheaper optimizer step, but with it the default model ended 0.95 dev F1 lower)")
    patience: int = Field(2, ge=1, description="epochs without dev F1 gain before stopping")
    time_budget_s: float | None = Field(None, gt=0, description="stop (and keep the best) after this long")
    # robust to unseen names (benchmarks/robust_training.py): on by default, 0 turns it off
    mention_replacement: float = Field(
        0.15, ge=0, le=1, description="per epoch, probability that a gold mention is replaced by another name of "
        "its type (see augment_invented_share); 0 = off")
    augment_invented_share: float = Field(
        0.5, ge=0, le=1,
        description="share of replacements that are invented names (the rest: other training mentions)")
    typo_rate: float = Field(0.1, ge=0, le=1, description="per epoch, probability that a gold mention gets a "
                             "one-character typo in one of its words; 0 = off")
    seed: int = 13
    device: str = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    max_train_sentences: int | None = Field(None, ge=1, description="use only the first N training sentences")
    progress: bool = True


class TrainResult(BaseModel):
    """What a training run did."""

    output: str
    best_dev_f1: float
    best_epoch: int
    epochs_run: int
    stopped: str  # "epochs", "early_stopping", "time_budget"
    train_seconds: float
    history: list[dict[str, float]]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_bucketed_batches(sentences: Sequence[Sentence], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of indices, each drawn from a pool sorted by length (less padding)."""
    order = list(range(len(sentences)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: len(sentences[i]))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


class Trainer:
    """Trains a :class:`SpanNER` and writes the best checkpoint by dev F1 to ``output``."""

    def __init__(
        self,
        config: TrainConfig,
        train: Sequence[Sentence],
        dev: Sequence[Sentence],
        output: str | Path,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        on_saved: Callable[[int], None] | None = None,
    ) -> None:
        """``on_epoch`` gets each epoch's record when it is scored; ``on_saved`` gets the epoch's
        number once its checkpoint (when dev improved) and resumable state are written."""
        if not train:
            raise ValueError("no training sentences")
        if not dev:
            raise ValueError("no development sentences (dev F1 picks the best checkpoint)")
        self.config = config
        self.train = list(train)[: config.max_train_sentences] if config.max_train_sentences else list(train)
        self.dev = list(dev)
        self.augmenter = MentionAugmenter(self.train, config.mention_replacement, config.typo_rate,
                                          config.augment_invented_share, config.seed)
        self.output = Path(output)
        self.on_epoch = on_epoch
        self.on_saved = on_saved
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = pick_device(config.device)
        seed_everything(config.seed)
        encoder_path = resolve_encoder(config.encoder)
        encoder = load_pretrained_encoder(encoder_path)
        self.tokenizer = load_tokenizer(encoder_path, encoder.config.model_type)
        labels = label_set(self.train)
        if not labels:
            raise ValueError("the training data has no entities, so there are no labels to learn")
        self.model_config = SpanModelConfig(
            labels=labels,
            encoder=str(config.encoder),
            max_span_len=config.max_span_len,
            width_dim=config.width_dim,
            casing_dim=config.casing_dim,
            hidden_dim=config.hidden_dim,
            dropout=config.dropout,
            objective=config.objective,
        )
        self.model = SpanNER(self.model_config, encoder).to(self.device)
        if config.freeze_word_embeddings:
            self.model.encoder.get_input_embeddings().weight.requires_grad_(False)
        limit = subword_limit(encoder.config, self.model_config.max_subwords)
        self.batcher = SpanBatcher(self.tokenizer, labels, config.max_span_len, limit)
        self.steps_per_epoch = math.ceil(len(self.train) / config.batch_size)
        self.optimizer = self._optimizer()
        self.trained_parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.scheduler = self._scheduler(self.steps_per_epoch * config.epochs)

    def _optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the trained parameters, the encoder's at ``lr_encoder`` and the head's at
        ``lr_head``; the fused kernel (one pass over all parameters) on CPU and CUDA."""
        encoder_ids = {id(p) for p in self.model.encoder.parameters()}
        trained = [p for p in self.model.parameters() if p.requires_grad]
        encoder_params = [p for p in trained if id(p) in encoder_ids]
        head_params = [p for p in trained if id(p) not in encoder_ids]
        return torch.optim.AdamW(
            [
                {"params": encoder_params, "lr": self.config.lr_encoder},
                {"params": head_params, "lr": self.config.lr_head},
            ],
            weight_decay=self.config.weight_decay,
            fused=self.device.type in ("cpu", "cuda"),
        )

    def _scheduler(self, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        warmup = max(1, int(self.config.warmup_ratio * total_steps))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    # ------------------------------------------------------------------ run

    def fit(self, resume: bool = False) -> TrainResult:
        """Train; with ``resume``, continue after the last finished epoch saved in ``output``.

        When the run ends by its own rules (epochs done, early stopping, time budget), the
        checkpoint's metadata records ``training.completed: true`` and why it ``stopped``, and the
        trainer's resumable state (optimizer included, about three times the weights) is deleted;
        an interrupted run leaves ``completed: false``, so :func:`ensure_trained` resumes it."""
        state = self._load_state() if resume else None
        start_epoch = state["epoch"] if state else 0
        best_f1 = state["best_f1"] if state else -1.0
        best_epoch = state["best_epoch"] if state else 0
        bad_epochs = state["bad_epochs"] if state else 0
        history: list[dict[str, float]] = state["history"] if state else []
        elapsed_before = state["elapsed"] if state else 0.0
        started = time.monotonic()
        # a run that had already stopped early (only its completion went unrecorded) trains no more
        stopped_early = bad_epochs >= self.config.patience
        stopped = "early_stopping" if stopped_early else "epochs"
        epoch = start_epoch
        for epoch in range(start_epoch + 1, (start_epoch if stopped_early else self.config.epochs) + 1):
            budget_left = self._budget_left(elapsed_before, started)
            if budget_left is not None and budget_left <= 0:
                stopped = "time_budget"
                epoch -= 1
                break
            loss, completed = self._train_epoch(epoch, lambda: self._budget_left(elapsed_before, started))
            dev_f1 = self.dev_f1()
            record = {"epoch": float(epoch), "loss": loss, "dev_f1": dev_f1,
                      "seconds": elapsed_before + time.monotonic() - started}
            history.append(record)
            self._report(record)
            if dev_f1 > best_f1:
                best_f1, best_epoch, bad_epochs = dev_f1, epoch, 0
                self._save_best(best_f1, epoch, history)
            else:
                bad_epochs += 1
            self._save_state(epoch, best_f1, best_epoch, bad_epochs, history, elapsed_before + time.monotonic() - started)
            self._update_training_metadata(last_epoch=epoch)
            if self.on_saved:
                self.on_saved(epoch)
            if not completed:
                stopped = "time_budget"
                break
            if bad_epochs >= self.config.patience:
                stopped = "early_stopping"
                break
        self._update_training_metadata(completed=True, stopped=stopped)
        (self.output / STATE_FILE).unlink(missing_ok=True)  # a finished run has nothing to resume
        return TrainResult(
            output=str(self.output),
            best_dev_f1=best_f1,
            best_epoch=best_epoch,
            epochs_run=epoch,
            stopped=stopped,
            train_seconds=elapsed_before + time.monotonic() - started,
            history=history,
        )

    def _budget_left(self, elapsed_before: float, started: float) -> float | None:
        if self.config.time_budget_s is None:
            return None
        return self.config.time_budget_s - elapsed_before - (time.monotonic() - started)

    def _train_epoch(self, epoch: int, budget_left: Callable[[], float | None]) -> tuple[float, bool]:
        """One pass over the training data; returns (mean loss, whether it finished)."""
        from tqdm.auto import tqdm

        self.model.train()
        rng = random.Random(self.config.seed * 1000 + epoch)
        train = self.augmenter.epoch(self.train, epoch)  # the originals when augmentation is off
        batches = length_bucketed_batches(train, self.config.batch_size, rng)
        kl_weight = min(1.0, epoch / self.config.kl_anneal_epochs)
        total_loss, seen, started = 0.0, 0, time.monotonic()
        bar = tqdm(batches, desc=f"epoch {epoch}/{self.config.epochs}", unit="batch",
                   disable=not self.config.progress, file=sys.stderr, mininterval=2.0)
        completed = True
        for step, indices in enumerate(bar, start=1):
            batch = self.batcher.encode([train[i] for i in indices], with_labels=True).to(self.device)
            logits = self.model(batch)
            loss = span_loss(logits, batch.span_labels, self.model_config, self.config.outside_weight, kl_weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.trained_parameters, 1.0)
            self.optimizer.step()
            self.scheduler.step()
            total_loss += loss.item()
            seen += len(indices)
            bar.set_postfix(loss=f"{total_loss / step:.4f}", sent_s=f"{seen / (time.monotonic() - started):.0f}")
            left = budget_left()
            if left is not None and left <= 0:
                completed = False
                break
        bar.close()
        return total_loss / max(1, step), completed

    def dev_f1(self) -> float:
        """Micro F1 on the development set."""
        predictor = SpanPredictor(self.model, self.batcher, self.device, batch_size=self.config.eval_batch_size)
        predictions = predictor.predict([s.tokens for s in self.dev], estimators=())
        self.model.train()
        scores = entity_scores([s.entities for s in self.dev], [[p.span for p in sent] for sent in predictions])
        return scores.micro.f1

    def _report(self, record: dict[str, float]) -> None:
        message = (f"epoch {int(record['epoch'])}: loss {record['loss']:.4f}, dev F1 {100 * record['dev_f1']:.2f}, "
                   f"{record['seconds']:.0f}s elapsed")
        if self.config.progress:
            print(message, file=sys.stderr, flush=True)
        log.info(message)
        if self.on_epoch:
            self.on_epoch(record)

    # ------------------------------------------------------------------ persistence

    def _save_best(self, dev_f1: float, epoch: int, history: list[dict[str, float]]) -> None:
        metadata: dict[str, Any] = {
            "training": {"dev_f1": dev_f1, "epoch": epoch, "history": history, "last_epoch": epoch,
                         "completed": False, "config": self.config.model_dump(),
                         "train_sentences": len(self.train)},
        }
        save_checkpoint(self.output, self.model, self.tokenizer, metadata)

    def _update_training_metadata(self, **fields: Any) -> None:
        """Set ``fields`` in the checkpoint's ``training`` metadata (other keys kept); no
        checkpoint yet (no epoch finished), nothing to do."""
        if not is_checkpoint(self.output):
            return
        metadata = read_metadata(self.output)
        metadata.setdefault("training", {}).update(fields)
        write_metadata(self.output, metadata)

    def _save_state(self, epoch: int, best_f1: float, best_epoch: int, bad_epochs: int,
                    history: list[dict[str, float]], elapsed: float) -> None:
        state = {
            "epoch": epoch, "best_f1": best_f1, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
            "history": history, "elapsed": elapsed,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "train_config": self.config.model_dump(),
        }
        self.output.mkdir(parents=True, exist_ok=True)
        temporary = self.output / (STATE_FILE + ".tmp")
        torch.save(state, temporary)
        temporary.replace(self.output / STATE_FILE)

    def _load_state(self) -> dict[str, Any] | None:
        path = self.output / STATE_FILE
        if not path.is_file():
            log.info("no training state in %s: starting from scratch", self.output)
            return None
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.config.progress:
            print(f"resuming after epoch {state['epoch']} (best dev F1 {100 * state['best_f1']:.2f})", file=sys.stderr)
        return state


def ensure_trained(output: str | Path, data_dir: str | Path, config: TrainConfig,
                   on_saved: Callable[[int], None] | None = None) -> Path:
    """Return ``output``; when it holds no checkpoint yet, train ``config`` on ``data_dir``'s
    train.txt and dev.txt into it first. A checkpoint whose training run was interrupted (see
    :func:`unfinished_training`) is resumed from its ``train_state.pt`` with the configuration it
    was started with (only ``threads``, ``progress`` and ``device`` come from ``config``).
    ``on_saved`` is the trainer's hook after each epoch's checkpoint is written."""
    from linkner.data.readers import read_dataset

    output, data_dir = Path(output), Path(data_dir)
    missing = f"no checkpoint at {output}"
    if is_checkpoint(output):
        unfinished = unfinished_training(output)
        if unfinished is None:
            return output
        config = _resumed_config(unfinished, config)
        missing = f"{output} holds an unfinished training run"
        print(f"{output}: resuming an unfinished training run after epoch "
              f"{unfinished.get('last_epoch', unfinished.get('epoch', '?'))}", file=sys.stderr, flush=True)
    for split in ("train", "dev"):
        if not (data_dir / f"{split}.txt").is_file():
            raise FileNotFoundError(f"{missing} and no training data at {data_dir / split}.txt")
    train, dev = read_dataset(data_dir / "train.txt"), read_dataset(data_dir / "dev.txt")
    Trainer(config, train, dev, output, on_saved=on_saved).fit(resume=True)
    return output


def _resumed_config(training: dict[str, Any], config: TrainConfig) -> TrainConfig:
    """The configuration an interrupted run started with, with ``config``'s run settings."""
    if not training.get("config"):
        return config
    try:
        stored = TrainConfig.model_validate(training["config"])
    except ValueError:  # written by another version of TrainConfig
        return config
    return stored.model_copy(update={key: getattr(config, key) for key in RUN_SETTINGS})
