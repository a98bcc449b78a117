"""One-click unsubscribe over HTTP (bulletin.edge.api.unsubscribe), on the app with its lifespan: POST records the
person's preference for the report without EMAIL and answers 200 every time; GET never changes anything; bad,
tampered, expired or other-purpose tokens are 400/410 pages or JSON, never a 500; the token is never logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bulletin.edge.api.file_links import FileLink, sign_link
from bulletin.models import Recipient
from bulletin.store.channel_preferences import Channel
from bulletin.store.recipient_preferences import list_preferences, set_preference
from tasks.email.unsubscribe import unsubscribe_keys, unsubscribe_url
from tests.api.v1_support import KEYSET, Api, running_api

ANN = Recipient(ref="rm-ann", email="ann@example.com", org="acme")
REPORT = "weekly-regional-sales"
PUBLIC = "https://bulletin.example.com"


@pytest.fixture
def api(tmp_path: Path, demo_warehouse: Path) -> Iterator[Api]:
    with running_api(tmp_path, demo_warehouse, public_url=PUBLIC) as running:
        yield running


def path_of(api: Api, sent_at: datetime | None = None, ttl_days: int = 60) -> str:
    keys = unsubscribe_keys(api.settings, KEYSET)
    url = unsubscribe_url(PUBLIC, keys, ANN, REPORT, sent_at=sent_at or datetime.now(UTC), ttl_days=ttl_days)
    return url.removeprefix(PUBLIC)


def anns(api: Api) -> list[tuple[str | None, tuple[Channel, ...]]]:
    return [(p.report_id, p.channels) for p in list_preferences(api.store, org="acme", recipient="rm-ann")]


def test_get_shows_a_button_that_posts_and_never_unsubscribes(api: Api) -> None:
    page = api.client.get(path_of(api), headers={"accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post"' in page.text and REPORT in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    api.client.get(path_of(api))
    assert anns(api) == [], "a GET (a mail scanner following the link) changes nothing"


def test_post_unsubscribes_and_answers_200_again_and_again(api: Api) -> None:
    set_preference(
        api.store,
        org="acme",
        recipient="rm-ann",
        report_id=None,
        channels=[Channel.EMAIL, Channel.S3],
        updated_by="k",
        now=datetime.now(UTC),
    )
    path = path_of(api)
    for _ in range(3):
        answer = api.client.post(
            path, content=b"List-Unsubscribe=One-Click", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "unsubscribed", "report_id": REPORT}
    assert anns(api) == [(None, (Channel.EMAIL, Channel.S3)), (REPORT, (Channel.S3,))], "email off, nothing else on"


def test_a_browsers_form_post_gets_a_page(api: Api) -> None:
    answer = api.client.post(path_of(api), data={"List-Unsubscribe": "One-Click"}, headers={"accept": "text/html"})
    assert answer.status_code == 200 and "no longer receive" in answer.text
    assert anns(api) == [(REPORT, (Channel.WEBHOOK, Channel.S3, Channel.SFTP))]


def test_no_api_key_is_needed_and_none_is_asked_for(api: Api) -> None:
    answer = api.client.post(path_of(api))
    assert answer.status_code == 200 and "www-authenticate" not in answer.headers


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_bad_tampered_expired_and_other_purpose_tokens_are_refused_cleanly(api: Api, method: str) -> None:
    good = path_of(api)
    body, mac = good.rsplit("/", 1)[1].split(".")
    tampered = f"/v1/unsubscribe/{body[:-2]}AA.{mac}"
    expired = path_of(api, sent_at=datetime.now(UTC) - timedelta(days=61))
    link = sign_link(b"k" * 32, FileLink(key="a.pdf", org="acme", expires_at=datetime.now(UTC) + timedelta(days=1)))
    cases = [(tampered, 400), (expired, 410), (f"/v1/unsubscribe/{link}", 400), ("/v1/unsubscribe/nonsense", 400)]
    for path, status in cases:
        answer = api.client.request(method, path)
        assert answer.status_code == status, (path, answer.text)
        assert answer.json()["error"]["code"] in ("bad_request", "gone")
        page = api.client.request(method, path, headers={"accept": "text/html"})
        assert page.status_code == status and "This link does not work" in page.text
    assert anns(api) == []


def test_the_token_is_never_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    path = path_of(api)
    token = path.rsplit("/", 1)[1]
    with caplog.at_level(logging.DEBUG):
        api.client.get(path)
        api.client.post(path)
        api.client.post(path[:-3] + "xyz")
    assert caplog.records, "the access log wrote its lines"
    assert token not in caplog.text and token[:40] not in caplog.text
    assert "/v1/unsubscribe/<token>" in caplog.text


def test_the_api_says_at_start_when_emails_carry_no_unsubscribe_link(
    tmp_path: Path, demo_warehouse: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    with caplog.at_level(logging.INFO), running_api(tmp_path / "a", demo_warehouse):
        pass
    said = [r.getMessage() for r in caplog.records if "BULLETIN_PUBLIC_URL" in r.getMessage()]
    assert said == ["BULLETIN_PUBLIC_URL is not set: emails carry no unsubscribe link (List-Unsubscribe)"]
    caplog.clear()
    with caplog.at_level(logging.INFO), running_api(tmp_path / "b", demo_warehouse, public_url=PUBLIC):
        pass
    assert "BULLETIN_PUBLIC_URL" not in caplog.text
