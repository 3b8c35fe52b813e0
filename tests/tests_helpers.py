"""Small helpers shared by tests."""

from pathlib import Path

from linkner.data.spans import Sentence


def entity_texts(sentence: Sentence) -> list[str]:
    return [sentence.span_text(span) for span in sentence.entities]


def train_tiny_span_model(encoder: Path, train: list[Sentence], dev: list[Sentence], output: Path) -> Path:
    """A tiny span model on ``encoder`` trained on the toy corpus (a few seconds on 2 cores)."""
    from linkner.model.training import TrainConfig, Trainer

    config = TrainConfig(encoder=str(encoder), epochs=6, batch_size=16, lr_encoder=1e-3, lr_head=3e-3, hidden_dim=64,
                         width_dim=8, casing_dim=8, patience=6, progress=False, threads=1, max_span_len=4,
                         mention_replacement=0.0, typo_rate=0.0)  # augmentation: test_augment.py
    Trainer(config, train, dev, output).fit()
    return output
