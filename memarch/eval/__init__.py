"""Evaluation: recall tasks, continual forgetting (CL metrics), KV budgets, tables and plots."""

from memarch.eval import cl_metrics, forgetting, plots
from memarch.eval.periodic import evaluate_config, periodic_evaluation
from memarch.eval.plots import plot_slice_accuracy
from memarch.eval.recall import (
    accuracy,
    baselines,
    evaluate_slices,
    evaluate_task,
    recall_table,
)

__all__ = [
    "accuracy",
    "baselines",
    "cl_metrics",
    "evaluate_config",
    "evaluate_slices",
    "evaluate_task",
    "forgetting",
    "periodic_evaluation",
    "plot_slice_accuracy",
    "plots",
    "recall_table",
]
