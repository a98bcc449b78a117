"""Delivering one run: each recipient's files through its channels (``deliver``, ``channels``), the services a
worker opens (``services``), the fan-out over tasks or lanes (``fanout``, ``spread``), the run cap
(``capacity``) and the manifest (``manifest``).

This ``__init__`` lists what other packages use. Modules that import Prefect, boto3 or paramiko are
imported from their own module, so importing this package stays cheap.
"""

from __future__ import annotations

from tasks.delivery.plan import DeliveryPlan

__all__ = ["DeliveryPlan"]
