"""Multiple-choice data: one example type, loaders for the common formats, prompt templates."""

from moe_roma.data.example import MCExample
from moe_roma.data.loaders import FORMATS, describe_formats, detect_format, load_examples, summarize_examples

__all__ = ["FORMATS", "MCExample", "describe_formats", "detect_format", "load_examples", "summarize_examples"]
