"""SpanNER: classify every span of up to L words from its boundary word states, width and casing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from linkner.model.batching import IGNORE_INDEX, SpanBatch
from linkner.model.casing import NUM_CASING_CLASSES
from linkner.model.config import SpanModelConfig
from linkner.model.packing import pack_inputs

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class SpanNER(nn.Module):
    """Encoder + span classifier over ``["O", *labels]``."""

    def __init__(self, config: SpanModelConfig, encoder: "PreTrainedModel") -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.width_embedding = nn.Embedding(config.max_span_len, config.width_dim)
        self.casing_embedding = nn.Embedding(NUM_CASING_CLASSES, config.casing_dim)
        features = 3 * hidden + config.width_dim + 2 * config.casing_dim
        self.head_dropout = nn.Dropout(config.dropout)
        self.hidden = nn.Linear(features, config.hidden_dim)
        self.output = nn.Linear(config.hidden_dim, config.num_classes)

    def span_features(self, batch: SpanBatch) -> torch.Tensor:
        """Encode once and build span representations ``[B, S, F]`` (no head dropout)."""
        words, casing = self.word_states(batch)
        start = _gather(words, batch.span_start)
        end = _gather(words, batch.span_end)
        return torch.cat(
            [
                start,
                end,
                start * end,
                self.width_embedding(batch.span_width.clamp(max=self.config.max_span_len - 1)),
                _gather(casing, batch.span_start),
                _gather(casing, batch.span_end),
            ],
            dim=-1,
        )

    def word_states(self, batch: SpanBatch, pack_tokens: int = 0,
                    first_position: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the encoder: each word's first sub-token state ``[B, W, H]`` and casing embedding
        ``[B, W, C]``. With ``pack_tokens``, the batch's sentences run end to end in packed rows of
        about that many sub-words, their positions counted from ``first_position``
        (:func:`encode_packed`: the same states up to float rounding, no padding); only for
        encoders :meth:`packed_first_position` finds a count for."""
        casing = self.casing_embedding(batch.casing)
        if not pack_tokens or batch.input_ids.size(0) < 2:
            states = self.encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
            return _gather(states, batch.word_index), casing
        states, token_index = encode_packed(self.encoder, batch.input_ids, batch.attention_mask, pack_tokens,
                                            first_position)
        return states[token_index.gather(1, batch.word_index)], casing

    @torch.no_grad()
    def packed_first_position(self, tolerance: float = 1e-3) -> int | None:
        """The position id each sentence of a packed row must start from for this encoder to give it
        the states it gives the sentence padded, or None when none does. BERT-style encoders count
        from 0; RoBERTa-style ones from ``pad_token_id + 1`` (their padded positions skip the
        padding id). The encoder must also take ``position_ids`` and a boolean 4-D attention mask, as
        encoders with PyTorch's scaled-dot-product attention do. Tried on two short made-up
        sentences."""
        config = self.encoder.config
        pad = config.pad_token_id if isinstance(config.pad_token_id, int) else 0
        device = self.hidden.weight.device
        real = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], device=device)
        made_up = (pad + 1 + torch.arange(10, device=device).view(2, 5)) % config.vocab_size
        input_ids = torch.where(real.bool(), made_up, pad)
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            padded = self.encoder(input_ids=input_ids, attention_mask=real).last_hidden_state[real.bool()].float()
            for first in dict.fromkeys((0, pad + 1)):
                states, token_index = encode_packed(self.encoder, input_ids, real, 16, first)
                if torch.allclose(states[token_index][real.bool()].float(), padded, atol=tolerance, rtol=0):
                    return first
        except (TypeError, ValueError, RuntimeError, IndexError):  # no position ids or 4-D mask taken
            return None
        finally:
            self.encoder.train(was_training)
        return None

    def selected_features(
        self, words: torch.Tensor, casing: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
    ) -> torch.Tensor:
        """Features ``[N, F]`` (as :meth:`span_features`) of the N spans ``rows[i], starts[i] ..
        ends[i]`` (inclusive) only."""
        start, end = words[rows, starts], words[rows, ends]
        width = self.width_embedding((ends - starts).clamp(0, self.config.max_span_len - 1))
        return torch.cat([start, end, start * end, width, casing[rows, starts], casing[rows, ends]], dim=-1)

    def selected_logits(
        self, words: torch.Tensor, casing: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
    ) -> torch.Tensor:
        """Deterministic logits ``[N, K+1]`` of the selected spans: ``classify(selected_features(...))``
        up to float rounding, without building the ``[N, F]`` features. The first layer is split
        by feature block: the start and end blocks (with casing) are projected once per word, the
        width block once per width, and only ``start * end`` is projected per span."""
        hidden_size, weight = words.size(-1), self.hidden.weight
        width_dim, casing_dim = self.config.width_dim, casing.size(-1)
        w_start, w_end, w_product = weight[:, :hidden_size], weight[:, hidden_size : 2 * hidden_size], \
            weight[:, 2 * hidden_size : 3 * hidden_size]
        offset = 3 * hidden_size + width_dim
        w_width = weight[:, 3 * hidden_size : offset]
        w_case_start, w_case_end = weight[:, offset : offset + casing_dim], weight[:, offset + casing_dim :]
        start_part = words @ w_start.T + casing @ w_case_start.T  # [B, W, D]
        end_part = words @ w_end.T + casing @ w_case_end.T
        width_part = F.linear(self.width_embedding.weight, w_width, self.hidden.bias)  # [L, D]
        widths = (ends - starts).clamp(0, self.config.max_span_len - 1)
        product = (words[rows, starts] * words[rows, ends]) @ w_product.T
        hidden = F.gelu(product + start_part[rows, starts] + end_part[rows, ends] + width_part[widths])
        return self.output(hidden)

    def classify(self, features: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Span features ``[..., F]`` to class logits ``[..., K+1]``. Head dropout applies in train
        mode, and with ``sample`` (one Monte Carlo dropout pass) in any mode: sampling never
        changes the module's state, so concurrent deterministic passes stay deterministic."""
        drop = self._sample_dropout if sample else self.head_dropout
        hidden = F.gelu(self.hidden(drop(features)))
        return self.output(drop(hidden))

    def _sample_dropout(self, values: torch.Tensor) -> torch.Tensor:
        return F.dropout(values, self.head_dropout.p, training=True)

    def forward(self, batch: SpanBatch) -> torch.Tensor:
        return self.classify(self.span_features(batch))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities: softmax, or the Dirichlet mean ``alpha / S`` for evidential models."""
        if self.config.objective == "evidential":
            alpha = evidence_alpha(logits, self.config.evidence_clamp)
            return alpha / alpha.sum(-1, keepdim=True)
        return logits.softmax(-1)


def encode_packed(encoder: "PreTrainedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  row_tokens: int, first_position: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``encoder`` over padded ``[B, T]`` inputs re-laid as packed rows (:func:`pack_inputs`):
    every row position's state, flattened to ``[rows * width, H]``, and ``token_index`` ``[B, T]``,
    where each sub-word's state is in it."""
    packed = pack_inputs(input_ids, attention_mask, row_tokens, first_position)
    states = encoder(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
                     position_ids=packed.position_ids).last_hidden_state
    return states.reshape(-1, states.size(-1)), packed.token_index


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[b, index[b, i]]`` for ``values`` ``[B, N, D]`` and ``index`` ``[B, M]``."""
    return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.size(-1)))


def evidence_alpha(logits: torch.Tensor, clamp: float = 10.0) -> torch.Tensor:
    """E-NER's Dirichlet parameters: ``alpha = exp(logits) + 1`` (logits clamped for stability)."""
    return logits.clamp(max=clamp).exp() + 1.0


def span_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    config: SpanModelConfig,
    outside_weight: float = 0.5,
    kl_weight: float = 0.0,
) -> torch.Tensor:
    """Mean per-span loss; spans whose gold class is ``O`` weigh ``outside_weight``.

    ``cross_entropy``: softmax cross-entropy. ``evidential``: the Dirichlet negative log marginal
    likelihood ``sum_j y_j (log S - log alpha_j)`` plus ``kl_weight`` times the KL divergence of the
    misleading evidence from the uniform Dirichlet (Sensoy et al. 2018, as used by E-NER).
    """
    valid = labels != IGNORE_INDEX
    logits, labels = logits[valid], labels[valid]
    if labels.numel() == 0:
        return logits.sum() * 0.0
    weights = torch.where(labels == 0, outside_weight, 1.0).to(logits.dtype)
    if config.objective == "evidential":
        per_span = _evidential_loss(logits, labels, config.evidence_clamp, kl_weight)
    else:
        per_span = F.cross_entropy(logits, labels, reduction="none")
    return (per_span * weights).sum() / weights.sum()


def _evidential_loss(logits: torch.Tensor, labels: torch.Tensor, clamp: float, kl_weight: float) -> torch.Tensor:
    alpha = evidence_alpha(logits, clamp)
    strength = alpha.sum(-1)
    one_hot = F.one_hot(labels, alpha.size(-1)).to(alpha.dtype)
    nll = (one_hot * (strength.log().unsqueeze(-1) - alpha.log())).sum(-1)
    if kl_weight <= 0:
        return nll
    misleading = one_hot + (1 - one_hot) * alpha
    return nll + kl_weight * dirichlet_kl_to_uniform(misleading)


def dirichlet_kl_to_uniform(alpha: torch.Tensor) -> torch.Tensor:
    """``KL(Dir(alpha) || Dir(1, ..., 1))`` over the last axis."""
    classes = alpha.size(-1)
    strength = alpha.sum(-1)
    return (
        torch.lgamma(strength)
        - torch.lgamma(torch.tensor(float(classes), dtype=alpha.dtype, device=alpha.device))
        - torch.lgamma(alpha).sum(-1)
        + ((alpha - 1) * (torch.digamma(alpha) - torch.digamma(strength).unsqueeze(-1))).sum(-1)
    )
