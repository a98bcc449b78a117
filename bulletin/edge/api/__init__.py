"""Bulletin's HTTP API: ``create_app`` builds it, ``bulletin serve`` runs it on uvicorn.

Thin on purpose: routes check the request and start work through Prefect; the decisions are pure functions in
``bulletin.triggers`` and ``bulletin.edge.api.inbound``.
"""

from bulletin.edge.api.app import create_app

__all__ = ["create_app"]
