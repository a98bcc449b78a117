"""The check of prefect.yaml and the Prefect server against the reports: ``bulletin deployments check``.

Pure: the CLI's adapter reads the server and hands what it read (``ServerDeployment``) to ``find_problems``, which
says in one sentence each what is missing or has drifted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bulletin.deployments import DEFAULT_WORK_POOL, DeploymentSpec, ScheduleSpec, yaml_scalar
from bulletin.errors import DefinitionError


def read_declared_deployments(path: Path) -> list[dict[str, Any]]:
    """The ``deployments:`` of a prefect.yaml (anchors and merge keys resolved), for the server check."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DefinitionError(f"cannot read {path}: {exc.strerror}", field="path") from exc
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{path} is not valid YAML: {exc}", field="path") from exc
    deployments = document.get("deployments") if isinstance(document, dict) else None
    if not isinstance(deployments, list) or not all(isinstance(d, dict) for d in deployments):
        raise DefinitionError(f"{path} has no 'deployments:' list", field="deployments")
    return deployments


def declared_work_pools(declared: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Work pool name -> the deployments of prefect.yaml that name it."""
    pools: dict[str, list[str]] = {}
    for deployment in declared:
        pool = deployment.get("work_pool")
        name = pool.get("name") if isinstance(pool, dict) else None
        if isinstance(name, str):
            pools.setdefault(name, []).append(str(deployment.get("name")))
    return pools


@dataclass(frozen=True)
class ServerDeployment:
    """What the Prefect server holds for one deployment, read by the CLI's adapter."""

    work_pool: str | None
    parameters: Mapping[str, Any]
    schedules: tuple[ScheduleSpec, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong between the reports, prefect.yaml and the server; ``missing``: something does not exist."""

    message: str
    missing: bool = False

    def __str__(self) -> str:
        return self.message


def _schedule_key(schedule: ScheduleSpec) -> tuple[str, str, str]:
    return (" ".join(schedule.cron.split()), schedule.timezone, yaml_scalar(dict(schedule.parameters)))


def find_problems(
    planned: Iterable[DeploymentSpec],
    declared: Iterable[Mapping[str, Any]],
    server_pools: set[str],
    server_deployments: Mapping[str, ServerDeployment],
    *,
    pool: str | None = None,
) -> list[Problem]:
    """Everything wrong between the reports, prefect.yaml and the Prefect server, one sentence each.

    A work pool that prefect.yaml names (or ``pool``) missing on the server, and a deployment the reports imply that
    is missing, on another pool, or deployed with other schedules or parameters. Prefect itself only warns about a
    missing pool, and then no worker ever picks the runs up.
    """
    declared = list(declared)
    pools = declared_work_pools(declared)
    if pool is not None:
        pools.setdefault(pool, [])
    problems = list(_pool_problems(pools, server_pools))
    declared_pool = {name: pool_name for pool_name, names in pools.items() for name in names}
    declared_names = {str(d.get("name")) for d in declared}
    for spec in planned:
        if spec.name not in declared_names:
            problems.append(Problem(f"prefect.yaml has no deployment {spec.name!r}: run `bulletin deployments sync`"))
        on_server = server_deployments.get(spec.full_name)
        if on_server is None:
            message = (
                f"deployment {spec.full_name} is missing on the Prefect server: run `prefect deploy --all --no-prompt`"
            )
            problems.append(Problem(message, missing=True))
            continue
        expected_pool = pool or declared_pool.get(spec.name) or DEFAULT_WORK_POOL
        problems.extend(_drift(spec, on_server, expected_pool))
    return problems


def _pool_problems(pools: Mapping[str, list[str]], server_pools: set[str]) -> Iterator[Problem]:
    """Each work pool prefect.yaml names (by the deployments that name it) that the server does not have."""
    for name in sorted(pools):
        if name not in server_pools:
            users = pools[name]
            named_by = f" (named by {len(users)} deployment(s) in prefect.yaml)" if users else ""
            message = (
                f"work pool {name!r}{named_by} does not exist on the Prefect server: create it with "
                f"`prefect work-pool create {name} --type process`"
            )
            yield Problem(message, missing=True)


def _drift(spec: DeploymentSpec, on_server: ServerDeployment, expected_pool: str) -> Iterator[Problem]:
    """How a deployment on the server differs from what the reports imply: its pool, schedules and parameters."""
    if on_server.work_pool != expected_pool:
        yield Problem(f"deployment {spec.full_name} is on work pool {on_server.work_pool!r}, not {expected_pool!r}")
    if not spec.schedules and on_server.schedules:
        # `prefect deploy` never removes a deployment's schedules: given none, it keeps the old ones.
        message = (
            f"deployment {spec.full_name} has schedules on the server but none in prefect.yaml: clear them with "
            f"`prefect deployment schedule clear {spec.full_name} --accept-yes`"
        )
        yield Problem(message)
    elif sorted(map(_schedule_key, on_server.schedules)) != sorted(map(_schedule_key, spec.schedules)):
        message = (
            f"deployment {spec.full_name} has other schedules on the server than the reports imply: "
            "run `prefect deploy --all --no-prompt`"
        )
        yield Problem(message)
    if yaml_scalar(dict(on_server.parameters)) != yaml_scalar(dict(spec.parameters)):
        message = (
            f"deployment {spec.full_name} has parameters {yaml_scalar(dict(on_server.parameters))} on the server, "
            f"not {yaml_scalar(dict(spec.parameters))}: run `prefect deploy --all --no-prompt`"
        )
        yield Problem(message)
