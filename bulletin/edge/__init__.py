"""The edge: what people and other programs talk to. The HTTP API (``api``), the command line (``cli``) and the
process supervisor behind ``bulletin serve`` (``supervisor``).

Imports run one way: the edge may import flows, tasks and the core (everything else in ``bulletin/``); nothing
imports the edge. import-linter holds this (``make lint``).
"""
