"""Eval metric arithmetic (pure): next-token accuracy from argmax ids, perplexity, which way is better."""
from __future__ import annotations

import math

import torch

from launcher.metrics.training import argmax_ids, greater_is_better, next_token_accuracy, perplexity


def test_accuracy_scores_prediction_t_against_label_t_plus_1_on_label_tokens_only():
    # row 0: labels 7 8 9 at positions 1-3 (position 0 is the prompt); predicted 7 8 5 -> 2 of 3
    # row 1: one label token (4) predicted right; the rest is padding across batches (-100 in both)
    predictions = [[7, 8, 5, 1], [4, 2, -100, -100]]
    labels = [[-100, 7, 8, 9], [-100, 4, -100, -100]]
    assert next_token_accuracy(predictions, labels) == {"accuracy": 3 / 4}
    assert next_token_accuracy([[1, 2]], [[-100, -100]]) == {"accuracy": 0.0}  # no label token: no division


def test_argmax_ids_keep_one_id_per_position_not_the_vocabulary():
    logits = torch.zeros(2, 3, 50)
    logits[1, 2, 17] = 1.0
    ids = argmax_ids((logits, "past_key_values"), None)
    assert ids.shape == (2, 3) and ids[1, 2] == 17


def test_perplexity_and_direction():
    assert abs(perplexity(math.log(20.0)) - 20.0) < 1e-9
    assert perplexity(1e6) == math.inf
    assert not greater_is_better("loss") and not greater_is_better("eval_loss")
    assert not greater_is_better("eval_perplexity") and greater_is_better("accuracy")
    assert greater_is_better("eval_loss", True) and not greater_is_better("accuracy", False)
