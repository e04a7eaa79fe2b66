"""Recall evaluation, tables and plots."""

from memarch.eval.mqar import evaluate_mqar, markdown_table, plot_accuracy
from memarch.eval.recall import accuracy, baselines, evaluate_task, recall_table

__all__ = [
    "accuracy",
    "baselines",
    "evaluate_mqar",
    "evaluate_task",
    "markdown_table",
    "plot_accuracy",
    "recall_table",
]
