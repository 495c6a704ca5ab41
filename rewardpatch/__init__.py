"""Teach an MMSegmentation checkout to fine-tune decode heads with task rewards."""

__version__ = "0.1.0"
