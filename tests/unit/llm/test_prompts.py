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


def test_candidate_options_are_lettered_in_the_given_order_with_non_entity_last():
    builder = PromptBuilder(["PER", "LOC", "ORG", "MISC"])
    query = QUERY.model_copy(update={"options": ["ORG", "LOC"]})
    assert [(o.letter, o.name, o.label) for o in builder.options_for(query)] == [
        ("A", "organization", "ORG"), ("B", "location", "LOC"), ("C", NON_ENTITY, NON_ENTITY)]
    assert builder.options_for(QUERY) == builder.options  # no options: every label
    user = builder.messages(query, "letter")[-1]["content"]
    question = user[user.index("Sentence: "):]
    assert question.endswith("Entity type of \"Lima\":\nA. organization\nB. location\nC. Non-entity\n"
                             "Answer with one letter (A, B, C).")
    assert "person" not in question and "miscellaneous" not in question
    named = builder.messages(query, "choice")[-1]["content"]
    assert named.endswith("Answer with one of: organization, location, Non-entity.")


def test_candidate_prompts_share_one_fixed_preamble_with_every_definition_unlettered():
    builder = PromptBuilder(["PER", "LOC", "ORG", "MISC"])
    first = builder.messages(QUERY.model_copy(update={"options": ["ORG", "LOC"]}), "letter")[-1]["content"]
    second = builder.messages(QUERY.model_copy(update={"options": ["PER"]}), "letter")[-1]["content"]
    assert first.startswith(builder.candidate_preamble) and second.startswith(builder.candidate_preamble)
    assert "- person: names of people" in builder.candidate_preamble
    assert "- miscellaneous: other names" in builder.candidate_preamble
    assert "A." not in builder.candidate_preamble and "B." not in builder.candidate_preamble
    assert builder.messages(QUERY, "letter")[-1]["content"].startswith(builder.preamble)  # "all" form unchanged


def test_candidate_demonstrations_answer_by_name_since_letters_belong_to_the_question():
    builder = PromptBuilder(["PER", "LOC"])
    demo = Demonstration(tokens=("in", "Paris", "today"), start=1, end=2, label="LOC")
    query = QUERY.model_copy(update={"options": ["PER"], "demonstrations": [demo]})
    user = builder.messages(query, "letter")[-1]["content"]
    assert "Span: \"Paris\"\nAnswer: location" in user
    assert user.endswith("A. person\nB. Non-entity\nAnswer with one letter (A, B).")


def test_candidate_options_must_be_known_distinct_entity_labels():
    builder = PromptBuilder(["PER", "LOC"])
    with pytest.raises(ValueError, match="not among the labels"):
        builder.options_for(QUERY.model_copy(update={"options": ["DRUG"]}))
    with pytest.raises(ValueError, match="always offered"):
        SpanQuery(tokens=["x"], start=0, end=1, options=["PER", NON_ENTITY])
    with pytest.raises(ValueError, match="repeat"):
        SpanQuery(tokens=["x"], start=0, end=1, options=["PER", "PER"])
