"""Bulletin: scheduled, row-secure report delivery on Prefect 3."""

__version__ = "0.1.0"
