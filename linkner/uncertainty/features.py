"""Features of a predicted span for the learned error detector, all available at request time.

Three sources (numpy only, no torch, no scikit-learn):

- the model's outputs for the span (computed by the predictor, :data:`SPAN_FEATURES`): top
  probability, margin to the second class, probability of ``O``, entropy, MC-dropout spread, and
  the strongest overlapping candidate the decoder suppressed;
- the span's words: width, casing, the sentence's shape (capitals and digits, as in sports tables),
  and a :class:`Lexicon` of the training data (was this surface form seen, how often, with which
  labels, how often unlabelled; how many of its words were seen at all);
- document evidence: the other predictions of the same document (a request, or a CoNLL
  ``-DOCSTART-`` document): the same surface form predicted with another label, occurring
  unpredicted, or inside/around another predicted name with another label.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from linkner.data.spans import Entity, Sentence

SPAN_FEATURES = ("p_top", "margin", "p_outside", "entropy", "mc_spread", "rival_p", "rivals")
MAX_SURFACE_WORDS = 10


def _surface(words: Sequence[str], start: int, end: int) -> str:
    return " ".join(words[start:end])


@dataclass
class Lexicon:
    """Training surface forms with their label counts (``O`` counts the unlabelled occurrences of
    the same words) and the lower-cased training vocabulary."""

    labels: list[str]
    surfaces: dict[str, dict[str, int]] = field(default_factory=dict)
    vocabulary: set[str] = field(default_factory=set)

    @classmethod
    def from_sentences(cls, sentences: Iterable[Sentence], labels: Sequence[str]) -> "Lexicon":
        """Count every gold entity's surface form, then its unlabelled occurrences."""
        sentences = list(sentences)
        surfaces: dict[str, Counter] = defaultdict(Counter)
        vocabulary: set[str] = set()
        longest = 1
        for sentence in sentences:
            vocabulary.update(token.lower() for token in sentence.tokens)
            for span in sentence.entities:
                surfaces[_surface(sentence.tokens, span.start, span.end)][span.label] += 1
                longest = max(longest, min(span.end - span.start, MAX_SURFACE_WORDS))
        for sentence in sentences:
            labelled = {(span.start, span.end) for span in sentence.entities}
            tokens = sentence.tokens
            for start in range(len(tokens)):
                for end in range(start + 1, min(len(tokens), start + longest) + 1):
                    text = _surface(tokens, start, end)
                    if text in surfaces and (start, end) not in labelled:
                        surfaces[text]["O"] += 1
        return cls(list(labels), {text: dict(counts) for text, counts in surfaces.items()}, vocabulary)

    def to_json(self) -> dict:
        return {"labels": self.labels, "surfaces": self.surfaces, "vocabulary": sorted(self.vocabulary)}

    @classmethod
    def from_json(cls, data: dict) -> "Lexicon":
        return cls(list(data["labels"]), {k: dict(v) for k, v in data["surfaces"].items()}, set(data["vocabulary"]))


LEXICON_FEATURES = ("train_mentions", "train_labels", "train_same_label", "train_seen", "train_unlabelled",
                    "known_words")
SHAPE_FEATURES = ("width", "all_caps", "title", "lower_start", "has_digit", "has_punct", "sentence_start",
                  "sentence_caps", "sentence_digits", "sentence_length")
DOCUMENT_FEATURES = ("doc_same", "doc_same_other_label", "doc_vote_own", "doc_vote_gap", "doc_unpredicted",
                     "doc_unpredicted_share", "doc_related", "doc_related_other_label")


def feature_names(labels: Sequence[str]) -> list[str]:
    """Column names of :func:`feature_matrix` (one indicator per predicted label at the end)."""
    return [*SPAN_FEATURES, *LEXICON_FEATURES, *SHAPE_FEATURES, *DOCUMENT_FEATURES,
            *(f"label_{label}" for label in labels)]


def lexicon_features(words: Sequence[str], entity: Entity, lexicon: Lexicon) -> list[float]:
    counts = lexicon.surfaces.get(_surface(words, entity.start, entity.end), {})
    mentions = sum(n for label, n in counts.items() if label != "O")
    seen = [w for w in words[entity.start:entity.end] if w.lower() in lexicon.vocabulary]
    return [math.log1p(mentions), float(sum(1 for label in counts if label != "O")),
            counts.get(entity.label, 0) / mentions if mentions else 0.0, float(mentions > 0),
            math.log1p(counts.get("O", 0)), len(seen) / max(1, entity.end - entity.start)]


def _caps(word: str) -> bool:
    letters = [c for c in word if c.isalpha()]
    return len(letters) > 1 and all(c.isupper() for c in letters)


def shape_features(words: Sequence[str], entity: Entity) -> list[float]:
    span = words[entity.start:entity.end]
    alphabetic = [w for w in words if any(c.isalpha() for c in w)]
    return [float(entity.end - entity.start), float(all(_caps(w) or not w.isalpha() for w in span)),
            float(all(w[:1].isupper() for w in span if w[:1].isalpha())),
            float(bool(span[0][:1].islower())), float(any(c.isdigit() for w in span for c in w)),
            float(any(not c.isalnum() for w in span for c in w)), float(entity.start == 0),
            sum(map(_caps, alphabetic)) / max(1, len(alphabetic)),
            sum(any(c.isdigit() for c in w) for w in words) / max(1, len(words)), math.log1p(len(words))]


def document_features(sentences: Sequence[Sequence[str]], predictions: Sequence[Sequence[Entity]],
                      members: Sequence[int]) -> dict[tuple[int, int], list[float]]:
    """:data:`DOCUMENT_FEATURES` of every prediction of one document (the sentences ``members``),
    keyed by ``(sentence, entity index)``."""
    by_surface: dict[str, list[tuple[int, int, Entity]]] = defaultdict(list)
    predicted_at: set[tuple[int, int, int]] = set()
    for i in members:
        for j, entity in enumerate(predictions[i]):
            by_surface[_surface(sentences[i], entity.start, entity.end)].append((i, j, entity))
            predicted_at.add((i, entity.start, entity.end))
    # occurrences of each predicted surface form in the document's words, predicted there or not
    longest = max((e.end - e.start for i in members for e in predictions[i]), default=0)
    occurrences: Counter = Counter()
    for i in members:
        words = sentences[i]
        for start in range(len(words)):
            for end in range(start + 1, min(len(words), start + longest) + 1):
                text = _surface(words, start, end)
                if text in by_surface and (i, start, end) not in predicted_at:
                    occurrences[text] += 1
    # single words of multi-word names, to relate "Clinton" to "Bill Clinton"
    words_in: dict[str, list[Entity]] = defaultdict(list)
    for mentions in by_surface.values():
        for i, _, entity in mentions:
            if entity.end - entity.start > 1:
                for word in set(sentences[i][entity.start:entity.end]):
                    words_in[word].append(entity)
    result: dict[tuple[int, int], list[float]] = {}
    for text, mentions in by_surface.items():
        votes: Counter = Counter()
        for _, _, entity in mentions:
            for label, probability in entity.alternatives or [(entity.label, entity.probability)]:
                votes[label] += probability
        for i, j, entity in mentions:
            others = len(mentions) - 1
            other_label = sum(1 for _, _, e in mentions if e.label != entity.label)
            own = votes[entity.label] / len(mentions)
            best_other = max((v for label, v in votes.items() if label != entity.label), default=0.0) / len(mentions)
            unpredicted = occurrences[text]
            related: list[Entity] = []
            if entity.end - entity.start == 1:
                related = words_in.get(text, [])
            else:
                for word in set(sentences[i][entity.start:entity.end]):
                    related += [e for _, _, e in by_surface.get(word, [])]
            result[(i, j)] = [math.log1p(others), float(other_label), own, own - best_other, math.log1p(unpredicted),
                              unpredicted / (unpredicted + len(mentions)), math.log1p(len(related)),
                              sum(1 for e in related if e.label != entity.label) / max(1, len(related))]
    return result


def document_groups(count: int, documents: Sequence[int] | None) -> list[list[int]]:
    """Sentence indices of each document; ``None``: all ``count`` sentences are one document."""
    if documents is None:
        return [list(range(count))] if count else []
    if len(documents) != count:
        raise ValueError(f"{count} sentences but {len(documents)} document ids")
    groups: dict[int, list[int]] = defaultdict(list)
    for index, document in enumerate(documents):
        groups[document].append(index)
    return list(groups.values())


def feature_matrix(sentences: Sequence[Sequence[str]], predictions: Sequence[Sequence[Entity]],
                   span_features: Sequence[Sequence[Sequence[float]]], lexicon: Lexicon,
                   documents: Sequence[int] | None = None) -> np.ndarray:
    """One row of :func:`feature_names` per prediction, in order (sentence by sentence)."""
    evidence: dict[tuple[int, int], list[float]] = {}
    for members in document_groups(len(sentences), documents):
        evidence.update(document_features(sentences, predictions, members))
    rows = []
    for i, (words, entities) in enumerate(zip(sentences, predictions)):
        for j, entity in enumerate(entities):
            rows.append([*span_features[i][j], *lexicon_features(words, entity, lexicon),
                         *shape_features(words, entity), *evidence[(i, j)],
                         *(float(entity.label == label) for label in lexicon.labels)])
    width = len(feature_names(lexicon.labels))
    return np.asarray(rows, dtype=np.float64).reshape(-1, width)
