"""Length-aware batching: the plan, packed rows, the split first layer, and predictions that depend on
neither the batch size nor the layout."""

from __future__ import annotations

import random

import pytest
import torch

from linkner.model.checkpoint import load_checkpoint
from linkner.model.packing import CPU_PACK_TOKENS, pack_inputs, pack_layout, plan_batches
from linkner.model.predictor import SpanPredictor


def _cost(lengths: list[int], batches: list[list[int]], overhead: int) -> int:
    return sum(overhead + len(batch) * max(lengths[i] for i in batch) for batch in batches)


def test_plan_covers_every_item_once_within_limits() -> None:
    lengths = [random.Random(seed).randint(3, 80) for seed in range(50)]
    batches = plan_batches(lengths, max_batch=8, overhead_tokens=24, max_tokens=300)
    assert sorted(i for batch in batches for i in batch) == list(range(50))
    assert all(len(batch) <= 8 for batch in batches)
    assert all(len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 300 for batch in batches)
    flat = [lengths[i] for batch in batches for i in batch]
    assert flat == sorted(flat)  # shortest first, contiguous in length order


def test_plan_trades_padding_against_calls() -> None:
    lengths = [10] * 8 + [60] * 8
    assert _cost(lengths, plan_batches(lengths, 16, overhead_tokens=24), 24) == 2 * 24 + 8 * 10 + 8 * 60
    assert len(plan_batches(lengths, 16, overhead_tokens=24)) == 2  # not padded to 60 together
    assert len(plan_batches(lengths, 16, overhead_tokens=10**6)) == 1  # calls dear: one batch
    assert len(plan_batches([12] * 5, 16, overhead_tokens=1)) == 1  # equal lengths: nothing to save
    assert len(plan_batches(lengths, 4)) == 4  # the item cap holds
    assert plan_batches([], 4) == []


def test_plan_is_optimal_on_small_cases() -> None:
    """Brute force over all cuts of the sorted order agrees with the dynamic programme."""
    rng = random.Random(3)
    for _ in range(30):
        lengths = sorted(rng.randint(1, 40) for _ in range(7))
        best = min(
            _cost(lengths, [list(range(a, b)) for a, b in zip([0, *cuts], [*cuts, 7])], 10)
            for mask in range(64)
            for cuts in [[i + 1 for i in range(6) if mask >> i & 1]]
            if all(b - a <= 3 for a, b in zip([0, *cuts], [*cuts, 7]))
        )
        assert _cost(lengths, plan_batches(lengths, 3, overhead_tokens=10), 10) == best


def test_selected_logits_match_full_features(tiny_checkpoint, toy_dev) -> None:
    model, batcher = load_checkpoint(tiny_checkpoint)
    batch = batcher.encode(toy_dev[:12])
    with torch.no_grad():
        expected = model.classify(model.span_features(batch))[batch.span_mask]
        words, casing = model.word_states(batch)
        rows, columns = batch.span_mask.nonzero(as_tuple=True)
        starts, ends = batch.span_start[rows, columns], batch.span_end[rows, columns]
        features = model.selected_features(words, casing, rows, starts, ends)
        assert torch.allclose(features, model.span_features(batch)[batch.span_mask])
        assert torch.allclose(model.selected_logits(words, casing, rows, starts, ends), expected, atol=1e-5)


def _mixed_sentences(toy_dev) -> list[tuple[str, ...]]:
    """Short, medium and long sentences (some long enough to be cut into windows), shuffled."""
    rng = random.Random(7)
    sentences = [s.tokens for s in toy_dev[:30]]
    sentences += [sum((toy_dev[i + j].tokens for j in range(k)), ()) for i, k in ((0, 3), (5, 6), (12, 14))]
    sentences += [("Paris",), (".",), ()]
    rng.shuffle(sentences)
    return sentences


@pytest.mark.parametrize("window_words", [128, 24])
def test_predictions_do_not_depend_on_batch_size(tiny_checkpoint, toy_dev, window_words: int) -> None:
    sentences = _mixed_sentences(toy_dev)
    estimators = ["confidence", "entropy"]
    one = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=1, window_words=window_words)
    many = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=64, window_words=window_words)
    alone = [one.predict([words], estimators)[0] for words in sentences]
    _assert_same_predictions(alone, many.predict(sentences, estimators))


def _assert_same_predictions(expected: list, found: list) -> None:
    """The same entities per sentence, with probabilities, alternatives and uncertainties equal up to
    float rounding."""
    assert sum(map(len, expected)) > 20
    for a, b in zip(expected, found, strict=True):
        assert [(p.start, p.end, p.label) for p in a] == [(p.start, p.end, p.label) for p in b]
        for p, q in zip(a, b):
            assert p.probability == pytest.approx(q.probability, abs=1e-5)
            assert [c for c, _ in p.alternatives] == [c for c, _ in q.alternatives]
            assert [v for _, v in p.alternatives] == pytest.approx([v for _, v in q.alternatives], abs=1e-5)
            assert p.uncertainty == pytest.approx(q.uncertainty, abs=1e-5)


def test_pack_layout_places_every_sequence_once_in_even_rows() -> None:
    rng = random.Random(5)
    for _ in range(50):
        lengths = [rng.randint(1, 90) for _ in range(rng.randint(1, 40))]
        starts, rows, width = pack_layout(lengths, 128)
        most = min(len(lengths), -(-sum(lengths) // 128))
        assert rows in (most, max(1, most - 1)) and width >= max(lengths)
        taken = sorted((start, start + length) for start, length in zip(starts, lengths))
        assert all(end <= following for (_, end), (following, _) in zip(taken, taken[1:]))  # no overlap
        assert all(start // width == (end - 1) // width for start, end in taken)  # none crosses a row
        assert rows * width - sum(lengths) <= rows * max(lengths)  # rows about even
    assert pack_layout([], 128) == ([], 0, 0)


def test_pack_layout_keeps_a_long_sequence_from_padding_a_row_of_its_own() -> None:
    assert pack_layout([400, 20, 20], 256)[1:] == (1, 440)  # not two rows of 400, one of them 95% padding
    assert pack_layout([20] * 20, 256)[1:] == (2, 200)  # short sentences: rows of about 256, no padding
    assert pack_layout([500], 256)[1:] == (1, 500)  # never more rows than sequences


def test_packed_inputs_keep_each_sentence_to_itself() -> None:
    input_ids = torch.tensor([[101, 7, 8, 9, 102], [101, 5, 102, 0, 0], [101, 6, 6, 102, 0]])
    attention_mask = (input_ids != 0).long()
    packed = pack_inputs(input_ids, attention_mask, row_tokens=8)
    flat_ids, flat_positions = packed.input_ids.reshape(-1), packed.position_ids.reshape(-1)
    for row in range(3):
        length = int(attention_mask[row].sum())
        where = packed.token_index[row, :length]
        assert flat_ids[where].tolist() == input_ids[row, :length].tolist()
        assert flat_positions[where].tolist() == list(range(length))  # positions restart per sentence
    width = packed.input_ids.size(1)
    mask = packed.attention_mask[:, 0].reshape(-1, width)  # [rows * width, width]
    for a in range(3):
        for b in range(3):
            for i in packed.token_index[a, : int(attention_mask[a].sum())].tolist():
                for j in packed.token_index[b, : int(attention_mask[b].sum())].tolist():
                    if i // width == j // width:
                        assert bool(mask[i, j % width]) == (a == b)


def test_packed_rows_predict_what_padded_batches_do(tiny_checkpoint, toy_dev) -> None:
    sentences = _mixed_sentences(toy_dev)
    estimators = ["confidence", "entropy"]  # (MC dropout draws its masks per forward call, and the layouts differ)
    padded = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=64, pack_tokens=0)
    packed = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=64, pack_tokens=24)
    assert padded.pack_tokens == 0 and packed.pack_tokens == 24  # 24 sub-words: many rows of several sentences
    _assert_same_predictions(padded.predict(sentences, estimators), packed.predict(sentences, estimators))


def test_an_encoder_that_cannot_take_packed_rows_gets_padded_batches(tiny_checkpoint, toy_dev) -> None:
    model, batcher = load_checkpoint(tiny_checkpoint)
    assert model.packed_first_position() == 0
    model.encoder.set_attn_implementation("eager")  # adds a boolean mask to the scores: not a block mask
    assert model.packed_first_position() is None
    predictor = SpanPredictor(model, batcher, "cpu", pack_tokens=256)
    assert predictor.pack_tokens == 0
    assert sum(map(len, predictor.predict([s.tokens for s in toy_dev[:20]]))) > 0


def test_a_cpu_predictor_packs_by_default(tiny_checkpoint) -> None:
    assert SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu").pack_tokens == CPU_PACK_TOKENS


def test_the_ner_config_chooses_the_layout(tiny_checkpoint) -> None:
    from deployments.ner import predictor_options
    from linkner.service.config import NERConfig

    for configured, expected in ((0, 0), (64, 64), (None, CPU_PACK_TOKENS)):
        options = predictor_options(NERConfig(checkpoint=str(tiny_checkpoint), pack_tokens=configured))
        assert SpanPredictor.from_checkpoint(tiny_checkpoint, "cpu", **options).pack_tokens == expected


def test_a_roberta_style_encoder_packs_with_its_positions_counted_past_the_padding_id() -> None:
    """RoBERTa numbers a padded sentence's positions from ``pad_token_id + 1``: packed rows count
    from there too, and give the states padding gives."""
    from transformers import RobertaConfig, RobertaModel

    from linkner.model.config import SpanModelConfig
    from linkner.model.span_model import SpanNER, encode_packed

    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=40, pad_token_id=1)
    model = SpanNER(SpanModelConfig(labels=["PER"]), RobertaModel(config)).eval()
    assert model.packed_first_position() == 2
    lengths = [7, 3, 12, 5, 9]
    input_ids = torch.full((5, 12), 1)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(3, 60, (length,))
    attention_mask = (input_ids != 1).long()
    with torch.no_grad():
        padded = model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        states, token_index = encode_packed(model.encoder, input_ids, attention_mask, 16, first_position=2)
        counted_from_zero, _ = encode_packed(model.encoder, input_ids, attention_mask, 16, first_position=0)
    real = attention_mask.bool()
    assert torch.allclose(states[token_index][real], padded[real], atol=1e-4)
    assert not torch.allclose(counted_from_zero[token_index][real], padded[real], atol=1e-2)


@pytest.fixture(scope="module")
def tiny_roberta_checkpoint(toy_train, toy_dev, tmp_path_factory: pytest.TempPathFactory):
    """A span model on a randomly initialised 2-layer RoBERTa with a byte-level BPE vocabulary
    learnt from the toy corpus (nothing downloaded), trained as ``tiny_checkpoint`` is."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    from tests_helpers import train_tiny_span_model

    encoder = tmp_path_factory.mktemp("tiny-roberta")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(s.tokens) for s in toy_train + toy_dev], vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    bpe.save_model(str(encoder))
    tokenizer = RobertaTokenizerFast.from_pretrained(encoder)  # from the vocab.json and merges.txt just written
    assert len(tokenizer) > 100 and tokenizer.pad_token_id == 1
    tokenizer.save_pretrained(encoder)
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
                 ).save_pretrained(encoder)
    return train_tiny_span_model(encoder, toy_train, toy_dev, tmp_path_factory.mktemp("tiny-roberta-model"))


def test_a_roberta_span_model_trains_and_predicts_the_same_packed_as_padded(tiny_roberta_checkpoint, toy_dev) -> None:
    """End to end with a RoBERTa encoder folder: it trains, its predictor packs rows counting positions
    from ``pad_token_id + 1``, and packed predictions are the padded ones."""
    sentences = _mixed_sentences(toy_dev)
    padded = SpanPredictor.from_checkpoint(tiny_roberta_checkpoint, device="cpu", batch_size=64, pack_tokens=0)
    packed = SpanPredictor.from_checkpoint(tiny_roberta_checkpoint, device="cpu", batch_size=64, pack_tokens=24)
    assert packed.pack_tokens == 24 and packed.first_position == padded.model.encoder.config.pad_token_id + 1 == 2
    _assert_same_predictions(padded.predict(sentences, ["confidence", "entropy"]),
                             packed.predict(sentences, ["confidence", "entropy"]))
