"""Rows -> conversations -> token ids and labels. Only the worker imports the tokenizer-facing parts."""
