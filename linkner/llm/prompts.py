"""The LinkNER classification prompt: label definitions, optional demonstrations, the sentence, and
"Select the entity type of SPAN in this context" over the labels plus "Non-entity".

The fixed part (instructions and definitions) comes first so that a prefix cache serves it for
every span. Options are shown with letters; backends score either the letters or the names.

A query may offer only some labels (``SpanQuery.options``: the local model's top candidates,
filter-then-rerank). Its prompt then starts with a second fixed preamble that defines every type
by name, without letters (so it is the same for every span and stays prefix-cached), and the
question ("Entity type of SPAN:", kept short: every token after the shared preamble is computed
for each span) lists the offered options, lettered A.. in the order given, Non-entity last.
Demonstrations in that form answer with the type's name, since letters belong to each question.
"""

from __future__ import annotations

from string import ascii_uppercase
from typing import Literal, Sequence

from pydantic import BaseModel

from linkner.llm.protocol import NON_ENTITY, Demonstration, SpanQuery

AnswerMode = Literal["letter", "label", "choice"]


class LabelSpec(BaseModel):
    """How an entity type is named and defined for the LLM."""

    label: str
    name: str
    definition: str


CONLL_LABELS: dict[str, LabelSpec] = {
    spec.label: spec
    for spec in (
        LabelSpec(label="PER", name="person",
                  definition="names of people, including fictional characters, e.g. 'Peter Blackburn', 'Clinton'."),
        LabelSpec(label="LOC", name="location",
                  definition="names of places: countries, cities, regions, rivers, mountains, e.g. 'Germany', 'Brussels'."),
        LabelSpec(label="ORG", name="organization",
                  definition="names of companies, institutions, teams, parties, agencies, e.g. 'European Commission', "
                             "'Reuters', 'Manchester United'."),
        LabelSpec(label="MISC", name="miscellaneous",
                  definition="other names: nationalities, languages, events, products, works, e.g. 'German', "
                             "'World Cup', 'Windows'."),
    )
}
NON_ENTITY_DEFINITION = "the words are not a named entity, or only part of one."


def label_specs(labels: Sequence[str], definitions: dict[str, str] | None = None) -> list[LabelSpec]:
    """Specs for ``labels``: user definitions first, CoNLL's built in, else a generic definition."""
    specs = []
    for label in labels:
        if definitions and label in definitions:
            specs.append(LabelSpec(label=label, name=label.lower(), definition=definitions[label]))
        elif label in CONLL_LABELS:
            specs.append(CONLL_LABELS[label])
        else:
            specs.append(LabelSpec(label=label, name=label.lower(), definition=f"names of type {label}."))
    return specs


class Option(BaseModel):
    """One answer option: its letter, its shown name and the label it stands for."""

    letter: str
    name: str
    label: str  # entity type or NON_ENTITY


class PromptBuilder:
    """Builds chat messages for span queries over a fixed label set."""

    def __init__(self, labels: Sequence[str], definitions: dict[str, str] | None = None) -> None:
        specs = label_specs(labels, definitions)
        if len(specs) + 1 > len(ascii_uppercase):
            raise ValueError(f"at most {len(ascii_uppercase) - 1} labels can be offered to the LLM")
        self.labels = list(labels)
        self.options = [Option(letter=ascii_uppercase[i], name=spec.name, label=spec.label)
                        for i, spec in enumerate(specs)]
        self.options.append(Option(letter=ascii_uppercase[len(specs)], name=NON_ENTITY, label=NON_ENTITY))
        definitions_text = "\n".join(f"{option.letter}. {option.name}: {spec.definition}"
                                     for option, spec in zip(self.options, specs))
        last = self.options[-1]
        # long enough that, with the chat template, the text every span shares reaches 192 tokens
        # for SmolLM2: six whole 32-token KV blocks, all reused from vLLM's prefix cache on CPU
        self.system = ("You are an expert annotator of named entities in news text. "
                       "Classify exactly the span you are asked about.")
        self.preamble = (
            "Classify a span of a sentence into one of these entity types.\n"
            f"{definitions_text}\n{last.letter}. {last.name}: {NON_ENTITY_DEFINITION}\n"
        )
        self.specs = {spec.label: spec for spec in specs}
        named = "\n".join(f"- {spec.name}: {spec.definition}" for spec in specs)
        self.candidate_preamble = (
            "Classify a span of a sentence into one of the entity types offered for it.\n"
            f"Entity types:\n{named}\n- {NON_ENTITY}: {NON_ENTITY_DEFINITION}\n"
        )

    def option_for(self, label: str) -> Option:
        for option in self.options:
            if option.label == label:
                return option
        raise KeyError(label)

    def options_for(self, query: SpanQuery) -> list[Option]:
        """The options offered for ``query``: every label, or its own labels lettered A.. in
        order, with Non-entity last. Labels outside this builder's label set are an error."""
        if query.options is None:
            return self.options
        unknown = [label for label in query.options if label not in self.specs]
        if unknown:
            raise ValueError(f"options {unknown} are not among the labels {self.labels}")
        offered = [Option(letter=ascii_uppercase[i], name=self.specs[label].name, label=label)
                   for i, label in enumerate(query.options)]
        offered.append(Option(letter=ascii_uppercase[len(offered)], name=NON_ENTITY, label=NON_ENTITY))
        return offered

    def preamble_for(self, query: SpanQuery) -> str:
        """The fixed text that starts ``query``'s user turn (one per option form, never per span)."""
        return self.preamble if query.options is None else self.candidate_preamble

    def answer_text(self, option: Option, mode: AnswerMode) -> str:
        """What the assistant says for ``option``: its letter, or its name."""
        return option.letter if mode == "letter" else option.name

    def messages(self, query: SpanQuery, mode: AnswerMode) -> list[dict[str, str]]:
        """Chat messages ending with the user turn; the answer is the assistant's next turn."""
        listed = query.options is not None
        parts = [self.preamble_for(query)]
        if query.demonstrations:
            parts.append("Examples:")
            parts.extend(self._example(demo, "label" if listed else mode) for demo in query.demonstrations)
            parts.append("")
        parts.append(self._question(query.tokens, query.text, mode, self.options_for(query), listed))
        return [{"role": "system", "content": self.system}, {"role": "user", "content": "\n".join(parts)}]

    def _question(self, tokens: Sequence[str], span: str, mode: AnswerMode, options: Sequence[Option],
                  listed: bool) -> str:
        letters = ", ".join(option.letter for option in options)
        names = ", ".join(option.name for option in options)
        how = f"Answer with one letter ({letters})." if mode == "letter" else f"Answer with one of: {names}."
        if not listed:
            return f"Sentence: {' '.join(tokens)}\nSelect the entity type of \"{span}\" in this context. {how}"
        choices = "\n".join(f"{option.letter}. {option.name}" for option in options)
        return f"Sentence: {' '.join(tokens)}\nEntity type of \"{span}\":\n{choices}\n{how}"

    def _example(self, demo: Demonstration, mode: AnswerMode) -> str:
        answer = self.answer_text(self.option_for(demo.label), mode)
        return f"Sentence: {' '.join(demo.tokens)}\nSpan: \"{demo.text}\"\nAnswer: {answer}"
