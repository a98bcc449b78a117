"""``bulletin serve`` on one machine: a Prefect server, the work pool and deployments, a worker and the HTTP API,
started in order, watched, and all stopped on Ctrl-C or SIGTERM.

``plan`` decides what to start (pure); ``processes`` starts and stops child processes and finds their descendants;
``run`` is the supervisor that puts them together.
"""
