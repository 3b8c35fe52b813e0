"""Scores, model assessment, linking evaluation and perturbed test sets."""
