"""ROUGE/BLEU of predictions (launcher/metrics/similarity.py) against values computed by hand."""
import pytest

from launcher.metrics.similarity import score_pair, score_rows


def test_chinese_pair():
    # jieba: 我/爱/北京/天安门 vs 我/爱/北京. ROUGE-1: 3 shared of 4 and 3 words, F = 2*(3/4)*1/(3/4+1) = 6/7;
    # ROUGE-2: 2 shared bigrams of 3 and 2, F = 2*(2/3)*1/(2/3+1) = 4/5; ROUGE-L: LCS 3 words, F = 6/7.
    # BLEU-4 on characters: precisions 4/7, 3/6, 2/5, 1/4, no brevity penalty (7 > 4): (1/35)^(1/4).
    s = score_pair("我爱北京天安门", "我爱北京")
    assert s["rouge-1"] == pytest.approx(600 / 7, abs=1e-4)
    assert s["rouge-2"] == pytest.approx(80.0, abs=1e-4)
    assert s["rouge-l"] == pytest.approx(600 / 7, abs=1e-4)
    assert s["bleu-4"] == pytest.approx(100 * (1 / 35) ** 0.25, abs=1e-4)


def test_english_pair():
    # words {the, cat} vs {the, cat, sat}: ROUGE-1 F = 2*1*(2/3)/(1+2/3) = 4/5; ROUGE-2: 1 of 1 and 2 bigrams,
    # F = 2/3; ROUGE-L: LCS 2 = 4/5. BLEU-4: every character n-gram of "the cat" is in "the cat sat" (precisions 1),
    # brevity penalty exp(1 - 11/7).
    import math

    s = score_pair("the cat", "the cat sat")
    assert s["rouge-1"] == pytest.approx(80.0, abs=1e-4)
    assert s["rouge-2"] == pytest.approx(200 / 3, abs=1e-4)
    assert s["rouge-l"] == pytest.approx(80.0, abs=1e-4)
    assert s["bleu-4"] == pytest.approx(100 * math.exp(1 - 11 / 7), abs=1e-4)


@pytest.mark.parametrize("predict,label", [("", "我爱北京"), ("  ", "the cat"), ("the cat", ""), ("", "")])
def test_empty_scores_zero(predict, label):
    assert score_pair(predict, label) == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu-4": 0.0}


def test_rows_are_averaged():
    scores = score_rows(["the cat", "", "我爱北京天安门"], ["the cat sat", "x", "我爱北京"])
    assert scores["predict_rouge-1"] == pytest.approx((80.0 + 0.0 + 600 / 7) / 3, abs=1e-4)
    assert set(scores) == {"predict_rouge-1", "predict_rouge-2", "predict_rouge-l", "predict_bleu-4"}
    with pytest.raises(ValueError):
        score_rows(["a"], [])
