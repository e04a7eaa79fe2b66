"""Evaluation: recall tasks, continual forgetting (CL metrics), KV budgets, tables and plots."""

from memarch.eval import cl_metrics, forgetting, plots
from memarch.eval.mqar import evaluate_mqar, markdown_table, plot_accuracy
from memarch.eval.recall import accuracy, baselines, evaluate_task, recall_table

__all__ = [
    "accuracy",
    "baselines",
    "cl_metrics",
    "evaluate_mqar",
    "evaluate_task",
    "forgetting",
    "markdown_table",
    "plot_accuracy",
    "plots",
    "recall_table",
]
