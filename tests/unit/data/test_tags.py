import pytest
from hypothesis import given, strategies as st

from linkner.data.spans import Span
from linkner.data.tags import TagError, spans_to_tags, tags_to_spans


def test_iob2_decoding():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]
    assert tags_to_spans(tags) == [Span(0, 2, "PER"), Span(3, 4, "LOC"), Span(4, 6, "LOC")]


def test_lenient_iob2_starts_entity_on_orphan_inside_tag():
    assert tags_to_spans(["O", "I-ORG", "I-ORG", "I-LOC"]) == [Span(1, 3, "ORG"), Span(3, 4, "LOC")]


def test_strict_iob2_rejects_inside_without_begin():
    with pytest.raises(TagError) as error:
        tags_to_spans(["B-PER", "O", "I-PER"], strict=True)
    assert error.value.index == 2
    assert "I- without B-" in str(error.value)


def test_strict_iob2_rejects_type_switch_inside_entity():
    with pytest.raises(TagError) as error:
        tags_to_spans(["B-PER", "I-LOC"], strict=True)
    assert error.value.index == 1


def test_iob1_decoding_uses_begin_only_between_same_type_entities():
    tags = ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    assert tags_to_spans(tags, scheme="iob1") == [Span(0, 2, "PER"), Span(2, 3, "PER"), Span(4, 5, "LOC")]


@pytest.mark.parametrize("bad", ["PER", "X-PER", "B-", "b-PER", ""])
def test_bad_tags_are_reported(bad):
    with pytest.raises(TagError, match="bad tag"):
        tags_to_spans(["O", bad])


def test_encoding_iob1_marks_adjacent_same_type_with_begin():
    spans = [Span(0, 2, "PER"), Span(2, 3, "PER"), Span(4, 5, "LOC")]
    assert spans_to_tags(5, spans, scheme="iob1") == ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]


def test_encoding_rejects_overlaps():
    with pytest.raises(ValueError, match="overlapping"):
        spans_to_tags(4, [Span(0, 2, "PER"), Span(1, 3, "LOC")])


@st.composite
def flat_spans(draw):
    length = draw(st.integers(1, 20))
    spans, position = [], 0
    while position < length:
        position += draw(st.integers(0, 3))
        width = draw(st.integers(1, 4))
        if position + width > length:
            break
        spans.append(Span(position, position + width, draw(st.sampled_from(["PER", "LOC", "ORG"]))))
        position += width
    return length, spans


@given(flat_spans(), st.sampled_from(["iob2", "iob1"]))
def test_round_trip(case, scheme):
    length, spans = case
    tags = spans_to_tags(length, spans, scheme=scheme)
    assert tags_to_spans(tags, scheme=scheme) == spans
    if scheme == "iob2":
        assert tags_to_spans(tags, strict=True) == spans
