import pytest

from pit.eval.metrics import answer_recall, exact_match, f1, normalize, rouge_l, score


def test_normalize_lowercases_strips_punctuation_articles_and_folds_space():
    assert normalize("  The  Glass,   Horizon! ") == "glass horizon"
    assert normalize("An apple a day") == "apple day"


def test_exact_match_uses_any_alias_after_normalisation():
    assert exact_match("the Balir Fike.", ["Balir Fike"]) == 1.0
    assert exact_match("23 November 1998", ["November 23, 1998", "23 November 1998"]) == 1.0
    assert exact_match("Balir", ["Balir Fike"]) == 0.0


def test_gold_that_normalises_to_nothing_does_not_match_everything():
    assert answer_recall("any prediction at all", ["The"]) == 0.0
    assert exact_match("", ["!"]) == 0.0
    assert exact_match("The", ["The"]) == 1.0
    assert answer_recall("it is the", ["the"]) == 1.0


def test_empty_or_blank_answers_never_match():
    assert exact_match("", []) == 0.0
    assert answer_recall("", ["", "  "]) == 0.0
    assert rouge_l("x", []) == 0.0


def test_answer_recall_needs_whole_words():
    assert answer_recall("It was directed by Balir Fike in 1998", ["Balir Fike"]) == 1.0
    assert answer_recall("Balir Fikes", ["Balir Fike"]) == 0.0


def test_rouge_l_and_f1_give_partial_credit():
    assert rouge_l("Balir Fike", ["Balir Fike"]) == pytest.approx(1.0)
    assert 0 < rouge_l("Balir Nonhen", ["Balir Fike"]) < 1
    assert f1("Balir", ["Balir Fike"]) == pytest.approx(2 / 3)
    assert f1("nothing", ["Balir Fike"]) == 0.0


def test_score_reports_percentages_and_checks_lengths():
    out = score(["Balir Fike", "wrong"], [["Balir Fike"], ["Sabun Nonhen"]])
    assert out["exact_match"] == 50.0
    assert out["answer_recall"] == 50.0
    with pytest.raises(ValueError, match="2 predictions for 1 questions"):
        score(["a", "b"], [["a"]])
