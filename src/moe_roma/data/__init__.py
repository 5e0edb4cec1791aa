"""Multiple-choice data: one example type, loaders for the common formats, prompt templates."""

from moe_roma.data.example import MCExample

__all__ = ["MCExample"]
