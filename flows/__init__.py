"""Prefect flows, one per module. They compose tasks and hold no business logic."""
