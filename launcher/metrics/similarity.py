"""ROUGE-1/2/L and BLEU-4 of generated text against labels, computed exactly as LLaMA-Factory's
ComputeSimilarity and ChatGLM2's ptuning main.py do, so the numbers compare:

    words: jieba.cut of each text; ROUGE: rouge-chinese Rouge().get_scores(" ".join(pred words),
    " ".join(label words)) F-scores ("f"); BLEU-4: nltk sentence_bleu([list(label)], list(pred)) on characters
    with SmoothingFunction().method3; each x100 and rounded to 4 places per row, then averaged over the rows.

One difference: a row whose prediction or label is empty (or only whitespace) scores 0 on all four, where
ChatGLM2's script crashes (rouge-chinese raises on an empty hypothesis).
"""
from __future__ import annotations

from typing import Iterable, Sequence

METRICS = ("rouge-1", "rouge-2", "rouge-l", "bleu-4")


def score_pair(predict: str, label: str) -> dict[str, float]:
    """The four scores of one prediction, each in [0, 100]."""
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    hypothesis, reference = list(jieba.cut(predict)), list(jieba.cut(label))
    if not " ".join(hypothesis).split() or not " ".join(reference).split():
        return dict.fromkeys(METRICS, 0.0)
    scores = Rouge().get_scores(" ".join(hypothesis), " ".join(reference))[0]
    out = {k: round(scores[k]["f"] * 100, 4) for k in ("rouge-1", "rouge-2", "rouge-l")}
    bleu = sentence_bleu([list(label)], list(predict), smoothing_function=SmoothingFunction().method3)
    out["bleu-4"] = round(bleu * 100, 4)
    return out


def score_rows(predicts: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """The mean of each score over the rows (keys predict_rouge-1, ... as LLaMA-Factory's predict_results.json)."""
    if len(predicts) != len(labels):
        raise ValueError(f"{len(predicts)} predictions for {len(labels)} labels")
    rows = [score_pair(p, lab) for p, lab in zip(predicts, labels)]
    return {f"predict_{m}": mean(r[m] for r in rows) for m in METRICS}


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
