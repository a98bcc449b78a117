"""Prefect tasks, one capability per module: pure functions first, adapters next, thin @task wrappers last."""
