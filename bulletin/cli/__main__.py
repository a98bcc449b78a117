"""``python -m bulletin.cli``: the ``bulletin`` command of this interpreter (``bulletin serve`` starts parts so)."""

from bulletin.cli import run

run()
