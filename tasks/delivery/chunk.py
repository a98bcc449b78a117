"""A lane's chunk of claimed recipients rendered from one warehouse scan (tasks/warehouse/combined.py).

Why: a delivery's query costs its scan (6 ms of CPU of a 25 ms delivery in the benchmark), and the recipients a lane
holds share the run's report and query, differing only in scope. A lane (tasks/delivery/prefect_tasks.py) claims every
recipient the dispatcher handed it in one ledger transaction; this renders them together, before each is sent:

- each recipient is prepared as one alone (``produce.prepare``): its own token minted and verified, its query, its
  chart (still one aggregate per recipient), its context. A recipient that fails here fails alone;
- one SELECT reads the rows of them all, each recipient's condition built from its own verified claims only, and each
  batch is split per recipient before any writer sees it; every recipient's writers are open together (memory stays
  flat: rows stream, one batch at a time). A recipient whose condition or writer fails fails alone;
- if the combined query cannot run, or fails while streaming, the recipients not yet failed take the one-query path
  (``produce.render_for``) and each succeeds or fails there on its own. So does a chunk of one.

Claims stay ahead of rendering (the lane claimed the chunk first, and its lease keeper renews the claims while the
chunk renders), and each recipient's token id still goes to the manifest. What a recipient is sent is exactly what its
single query would have written: the same rows in the same order (for a total ORDER BY), the same limit and truncation.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from bulletin.errors import BulletinError
from bulletin.models import Recipient
from tasks.delivery.channels import RenderedFile
from tasks.delivery.outcomes import Attempt
from tasks.delivery.plan import DeliveryPlan
from tasks.delivery.produce import Prepared, Produced, file_paths, prepare, render_for, rendered_files
from tasks.delivery.services import DeliveryServices
from tasks.render import open_writer
from tasks.render.base import ReportWriter
from tasks.warehouse.combined import CombinedResult, Member, run_combined

#: What rendering a chunk gives each of its recipients: its files, or why it failed (for it alone).
Rendered = Produced | BulletinError


def render_claimed(
    plan: DeliveryPlan,
    services: DeliveryServices,
    audience: list[Recipient],
    claimed: Sequence[tuple[int, Attempt | None]],
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> dict[int, Rendered]:
    """A lane's claimed chunk (``claim_chunk``), rendered from one scan: by audience index, what each recipient with
    files to make got. A recipient left out renders on its own, as before: a dry run (nothing claimed), a recipient
    with nothing left to send, a chunk of one, and every one of them if the chunk's rendering broke unexpectedly
    (logged: the one-recipient path then records what fails)."""
    todo = [(index, attempt) for index, attempt in claimed if attempt is not None and attempt.todo]
    if len(todo) < 2:
        return {}
    chunk = [(audience[index], sorted({fmt for fmt, _ in attempt.todo})) for index, attempt in todo]
    try:
        rendered = render_chunk(plan, services, chunk)
    except Exception:  # the one-recipient path is the reference: an unexpected failure here must cost no recipient
        logger.exception("rendering a chunk of %d recipients from one scan failed; rendering each alone", len(chunk))
        return {}
    return {index: r for (index, _), r in zip(todo, rendered, strict=True) if r is not None}


def render_chunk(
    plan: DeliveryPlan, services: DeliveryServices, chunk: list[tuple[Recipient, list[str]]]
) -> list[Rendered | None]:
    """Each ``(recipient, formats)`` of ``chunk`` rendered, in order: its files, its own failure, or None where it
    must take the one-recipient path (``render_for``) because the combined query failed."""
    results: list[Rendered | None] = [None] * len(chunk)
    ready: list[tuple[int, Prepared]] = []
    for i, (recipient, _) in enumerate(chunk):
        try:
            ready.append((i, prepare(plan, services, recipient)))
        except BulletinError as exc:
            results[i] = exc
    if len(ready) == 1:  # nothing to share: the one-query path, with the token already minted
        i, prepared = ready[0]
        results[i] = _alone(plan, services, chunk[i], prepared)
        return results
    if not ready:
        return results
    try:
        combined = run_combined(
            [Member(p.claims, p.query) for _, p in ready],
            services.datasets,
            services.warehouse,
            batch_rows=plan.batch_rows,
        )
    except BulletinError:
        return results  # the combined query cannot run: each recipient not yet failed is queried alone
    for position, refused in combined.errors.items():
        results[ready[position][0]] = refused
    for position, written in _write_split(plan, services, chunk, ready, combined).items():
        i, prepared = ready[position]
        results[i] = written if isinstance(written, BulletinError) else _produced(prepared, written)
    return results


def _alone(
    plan: DeliveryPlan, services: DeliveryServices, item: tuple[Recipient, list[str]], prepared: Prepared
) -> Rendered:
    recipient, formats = item
    try:
        return render_for(plan, services, recipient, formats, prepared=prepared)
    except BulletinError as exc:
        return exc


def _produced(prepared: Prepared, files: dict[str, RenderedFile]) -> Produced:
    return Produced(prepared.jti, prepared.claims, prepared.ctx, files)


Written = dict[str, RenderedFile] | BulletinError


def _open(
    plan: DeliveryPlan,
    services: DeliveryServices,
    chunk: list[tuple[Recipient, list[str]]],
    ready: list[tuple[int, Prepared]],
    combined: CombinedResult,
) -> tuple[dict[int, dict[str, Path]], dict[int, dict[str, ReportWriter]], dict[int, Written]]:
    """Every member's files and writers, opened together; a member whose writer cannot open fails alone."""
    paths: dict[int, dict[str, Path]] = {}
    writers: dict[int, dict[str, ReportWriter]] = {}
    failed: dict[int, Written] = {}
    for position in combined.positions:
        i, prepared = ready[position]
        recipient, formats = chunk[i]
        paths[position] = file_paths(plan, services, recipient, formats)
        try:
            writers[position] = {
                fmt: open_writer(fmt, path, combined.schema, prepared.ctx, csv_bom=plan.csv_bom)
                for fmt, path in paths[position].items()
            }
        except BulletinError as exc:
            failed[position] = exc
    return paths, writers, failed


def _write_split(
    plan: DeliveryPlan,
    services: DeliveryServices,
    chunk: list[tuple[Recipient, list[str]]],
    ready: list[tuple[int, Prepared]],
    combined: CombinedResult,
) -> dict[int, Written]:
    """Stream the combined result once, each member's rows to its own writers: by member position, its files or its
    failure. A member missing from the answer must be queried alone: the scan failed before it was done."""
    with ExitStack() as stack:
        stack.callback(combined.close)
        paths, writers, out = _open(plan, services, chunk, ready, combined)
        try:
            for parts in combined:
                for position, batch in parts:
                    if position in out:
                        continue
                    try:
                        for writer in writers[position].values():
                            writer.write_batch(batch)
                    except BulletinError as exc:
                        out[position] = exc
        except BulletinError:  # the scan itself failed: every member not yet failed is rendered again alone
            for position, files in paths.items():
                if position not in out:
                    shutil.rmtree(next(iter(files.values())).parent, ignore_errors=True)
            return out
        for position, member_writers in writers.items():
            if position in out:
                continue
            truncated_at = combined.rows[position] if combined.truncated[position] else None
            try:
                rows = {fmt: writer.close(truncated_at=truncated_at) for fmt, writer in member_writers.items()}
            except BulletinError as exc:
                out[position] = exc
            else:
                out[position] = rendered_files(paths[position], rows)
    return out
