import pytest

from linkner.llm.prompts import PromptBuilder
from linkner.llm.protocol import NON_ENTITY, Demonstration, SpanQuery

QUERY = SpanQuery(tokens=["Anna", "Berg", "visited", "Lima"], start=3, end=4)


def test_options_are_labels_plus_non_entity_with_letters():
    builder = PromptBuilder(["PER", "LOC", "ORG", "MISC"])
    assert [(o.letter, o.label) for o in builder.options] == [
        ("A", "PER"), ("B", "LOC"), ("C", "ORG"), ("D", "MISC"), ("E", NON_ENTITY)]
    assert "B. location: names of places" in builder.preamble


def test_prompt_has_fixed_part_first_then_demonstrations_then_question():
    builder = PromptBuilder(["PER", "LOC"])
    demo = Demonstration(tokens=("in", "Paris", "today"), start=1, end=2, label="LOC")
    query = QUERY.model_copy(update={"demonstrations": [demo]})
    user = builder.messages(query, "letter")[-1]["content"]
    assert user.startswith(builder.preamble)
    assert user.index("Span: \"Paris\"\nAnswer: B") < user.index("Select the entity type of \"Lima\" in this context")
    assert user.endswith("Answer with one letter (A, B, C).")
    named = builder.messages(query, "choice")[-1]["content"]
    assert "Answer: location" in named and named.endswith("Answer with one of: person, location, Non-entity.")


def test_user_definitions_for_other_label_sets():
    builder = PromptBuilder(["DRUG", "DOSE"], {"DRUG": "names of medicines."})
    assert "A. drug: names of medicines." in builder.preamble
    assert "B. dose: names of type DOSE." in builder.preamble


def test_too_many_labels_is_an_error():
    with pytest.raises(ValueError, match="at most 25"):
        PromptBuilder([f"T{i}" for i in range(30)])
