"""Synthetic tasks (index-addressable sources) and grain input pipelines."""

from memarch.data.mqar import IGNORE_INDEX, MQARConfig, MQARSource, chance_accuracy, mqar_batch

__all__ = ["IGNORE_INDEX", "MQARConfig", "MQARSource", "chance_accuracy", "mqar_batch"]
