"""Language models over hybrid mixer stacks, and generation."""

from memarch.models.generate import generate, sample_token
from memarch.models.lm import LM, Block, LMConfig
from memarch.models.pattern import parse_pattern, ratio_pattern

__all__ = ["LM", "Block", "LMConfig", "generate", "parse_pattern", "ratio_pattern", "sample_token"]
