"""Small helpers shared by tests."""

from linkner.data.spans import Sentence


def entity_texts(sentence: Sentence) -> list[str]:
    return [sentence.span_text(span) for span in sentence.entities]
