"""One-off scheduled events: a pass that sends what is due (``dispatch``) and the flow runs that follow
(``runs``).

This ``__init__`` lists what other packages use. Modules that import Prefect, boto3 or paramiko are
imported from their own module, so importing this package stays cheap.
"""

from __future__ import annotations
