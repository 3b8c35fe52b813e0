"""Documents go to the NER replicas in chunks of whole sentences (so a long document never holds
one batch slot alone), and come back in order."""

import asyncio

from deployments.handles import HandleRecognizer, sentence_chunks


def test_chunks_hold_whole_sentences_of_about_the_word_budget():
    sentences = [["w"] * n for n in (3, 4, 2, 10, 1, 1)]
    assert sentence_chunks(sentences, 7) == [(0, 2), (2, 3), (3, 4), (4, 6)]
    assert sentence_chunks(sentences, 100) == [(0, 6)]
    assert sentence_chunks([], 5) == []


class _Method:
    def __init__(self):
        self.calls = []

    def remote(self, sentences, estimators, carrier):
        self.calls.append(len(sentences))

        async def answer():
            await asyncio.sleep(0.01 * (5 - len(self.calls)))  # later chunks finish first
            return [[f"{sentence[0]}"] for sentence in sentences]

        return answer()


class _Handle:
    def __init__(self):
        self.predict = _Method()


def test_chunked_predictions_come_back_in_document_order():
    handle = _Handle()
    recognizer = HandleRecognizer(handle, ["PER"], max_words_per_call=4)
    sentences = [[f"s{i}", "a", "b"] for i in range(5)]
    result = asyncio.run(recognizer.recognize(sentences, ["confidence"]))
    assert result == [[f"s{i}"] for i in range(5)]
    assert handle.predict.calls == [1, 1, 1, 1, 1]
