"""Documents go to the NER replicas in chunks of whole sentences (so a long document never holds
one batch slot alone), and come back in order."""

import asyncio

from deployments.handles import CoalescingRecognizer, sentence_chunks


def test_chunks_hold_whole_sentences_of_about_the_word_budget():
    sentences = [["w"] * n for n in (3, 4, 2, 10, 1, 1)]
    assert sentence_chunks(sentences, 7) == [(0, 2), (2, 3), (3, 4), (4, 6)]
    assert sentence_chunks(sentences, 100) == [(0, 6)]
    assert sentence_chunks([], 5) == []


class _NER:
    """An NERClient that answers each sentence with its first word; later calls finish first."""

    def __init__(self):
        self.calls = []
        self.requests = []  # how many requests the recognizer said each call merges

    async def predict(self, sentences, estimators, carrier, documents=None, requests=1):
        self.calls.append(len(sentences))
        self.requests.append(requests)
        await asyncio.sleep(0.01 * (5 - len(self.calls)))
        return [[f"{sentence[0]}"] for sentence in sentences]


def test_chunked_predictions_come_back_in_document_order():
    ner = _NER()
    recognizer = CoalescingRecognizer(ner, ["PER"], max_words_per_call=4)
    sentences = [[f"s{i}", "a", "b"] for i in range(5)]
    result = asyncio.run(recognizer.recognize(sentences, ["confidence"]))
    assert result == [[f"s{i}"] for i in range(5)]
    assert ner.calls == [1, 1, 1, 1, 1]


def test_requests_arriving_during_a_call_share_the_next_one_and_each_gets_its_own_answer():
    ner = _NER()
    recognizer = CoalescingRecognizer(ner, ["PER"], max_words_per_call=100, calls_in_flight=1)

    async def main():
        requests = [[[f"r{r}s{i}", "x"] for i in range(r + 1)] for r in range(6)]  # 1..6 sentences each
        answers = await asyncio.gather(*[recognizer.recognize(sentences, ["confidence"]) for sentences in requests])
        return requests, answers

    requests, answers = asyncio.run(main())
    for sentences, answer in zip(requests, answers):
        assert answer == [[sentence[0]] for sentence in sentences]
    # the first request goes at once (nothing in flight); the other five wait for it, then go together
    assert ner.calls == [1, 20] and ner.requests == [1, 5]


def test_a_failing_call_fails_every_request_in_it_and_the_next_call_still_goes():
    class Failing:
        def __init__(self):
            self.calls = 0

        async def predict(self, sentences, estimators, carrier, documents=None, requests=1):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("replica died")
            return [[sentence[0]] for sentence in sentences]

    ner = Failing()
    recognizer = CoalescingRecognizer(ner, ["PER"], max_words_per_call=4, calls_in_flight=1)

    async def main():
        return await asyncio.gather(recognizer.recognize([["a", "b"]], ["confidence"]),
                                    recognizer.recognize([["c", "d"]], ["confidence"]),
                                    recognizer.recognize([["e", "f"]], ["confidence"]), return_exceptions=True)

    first, second, third = asyncio.run(asyncio.wait_for(main(), 5))
    assert isinstance(first, RuntimeError) and "replica died" in str(first)
    assert second == [["c"]] and third == [["e"]]  # waited, then went together in the next call
    assert ner.calls == 2


def test_the_next_call_goes_before_the_answered_requests_are_woken():
    """Answering the finished call's requests takes the event loop a while (responses, metrics):
    the freed pass must not sit idle behind them."""
    events = []

    class Recording:
        async def predict(self, sentences, estimators, carrier, documents=None, requests=1):
            events.append(f"call {sentences[0][0]}")
            await asyncio.sleep(0.01)
            return [[sentence[0]] for sentence in sentences]

    recognizer = CoalescingRecognizer(Recording(), ["PER"], calls_in_flight=1)

    async def request(word):
        assert await recognizer.recognize([[word]], ["confidence"]) == [[word]]
        events.append(f"answered {word}")

    async def main():
        await asyncio.gather(request("a"), request("b"))

    asyncio.run(asyncio.wait_for(main(), 5))
    assert events == ["call a", "call b", "answered a", "answered b"]
