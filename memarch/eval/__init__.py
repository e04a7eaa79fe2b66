"""Recall evaluation, tables and plots."""

from memarch.eval import cl_metrics, forgetting, plots
from memarch.eval.mqar import evaluate_mqar, markdown_table, plot_accuracy

__all__ = ["evaluate_mqar", "markdown_table", "plot_accuracy"]
__all__ += ["cl_metrics", "forgetting", "plots"]  # continual forgetting
