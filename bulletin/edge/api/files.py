"""``GET /v1/files/{name}?token=...``: a local-bucket file, for whoever holds a signed link from
``GET /v1/jobs/{id}/download`` (the token is the credential, like an S3 presigned URL; no API key needed).

Tampered or malformed token: 403; expired: 410; the file gone: 404. The key is re-checked and the path resolved
under the bucket root, so no token, even a validly signed one, can name a file outside it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from bulletin.edge.api.file_links import TOKEN_MAX, verify_link
from bulletin.edge.api.job_service import JobService
from bulletin.errors import ForbiddenError, NotFoundError, StorageError
from tasks.render import MEDIA_TYPES
from tasks.storage import check_key

router = APIRouter(prefix="/v1/files", tags=["jobs"])

_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {media: {} for media in MEDIA_TYPES.values()}, "description": "The file."},
}


@router.get("/{name}", name="download_file", response_class=FileResponse, responses=_FILE_RESPONSES)
async def download_file(
    name: str,
    request: Request,
    token: str = Query(min_length=1, max_length=TOKEN_MAX, description="The signed link's token."),
) -> FileResponse:
    """Stream one local-bucket file named by a signed, expiring link."""
    service: JobService = request.app.state.jobs
    now: datetime = request.app.state.clock()
    path = await run_in_threadpool(_resolve, service, name, token, now)
    extension = path.suffix.lstrip(".")
    media = MEDIA_TYPES.get(extension, "application/octet-stream")
    return FileResponse(path, media_type=media, filename=path.name)


def _resolve(service: JobService, name: str, token: str, now: datetime) -> Any:
    link = verify_link(service.link_secret(), token, now=now)
    try:
        key = check_key(link.key)
    except StorageError as exc:
        raise ForbiddenError("this download link is not valid", field="token") from exc
    root = service.settings.bucket_path.resolve()
    path = root.joinpath(*key.split("/")).resolve()
    if not path.is_relative_to(root) or path.name != name:
        raise ForbiddenError("this download link is not valid", field="token")
    if not path.is_file():
        raise NotFoundError("the file of this link is no longer there", field="token")
    return path
