"""Synthetic tasks (index-addressable sources), their registry and grain input pipelines."""

from memarch.data.mqar import IGNORE_INDEX, MQARConfig, MQARSource, chance_accuracy, mqar_batch
from memarch.data.tasks import RECALL_TASKS, TaskSpec, get_task

__all__ = [
    "IGNORE_INDEX",
    "MQARConfig",
    "MQARSource",
    "RECALL_TASKS",
    "TaskSpec",
    "chance_accuracy",
    "get_task",
    "mqar_batch",
]
