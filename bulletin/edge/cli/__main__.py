"""``python -m bulletin.edge.cli``: the ``bulletin`` command of this interpreter (``bulletin serve`` starts parts
so)."""

from bulletin.edge.cli import run

run()
