from linkner.model.decoding import greedy_non_overlapping


def test_most_confident_wins_and_result_is_in_position_order():
    candidates = ["a", "b", "c", "d"]
    boundaries = [(0, 2), (1, 3), (3, 4), (2, 3)]
    scores = [0.6, 0.9, 0.7, 0.5]
    # b (0.9) takes words 1-2; c (0.7) fits; a overlaps b; d overlaps b
    assert greedy_non_overlapping(candidates, boundaries, scores) == ["b", "c"]


def test_ties_prefer_earlier_then_shorter():
    assert greedy_non_overlapping(["long", "short"], [(0, 3), (0, 1)], [0.5, 0.5]) == ["short"]
