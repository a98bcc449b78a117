"""``bulletin api-keys create|list|revoke`` through the real entry point (``bulletin.edge.cli.main``): the key printed
once, never listed, one-line errors with the tree's exit codes; the key then works (and stops working) against the
app's authentication."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bulletin.edge.cli import main
from bulletin.settings import Settings
from bulletin.store import open_store
from bulletin.store.api_keys import authenticate


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BULLETIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BULLETIN_DATABASE_URL", raising=False)
    return tmp_path / "home"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def create(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    code, out, err = run(capsys, "api-keys", "create", *args)
    assert code == 0, err
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert "not shown again" in err
    return lines["id"], lines["key"]


def test_create_list_revoke(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_id, key = create(capsys, "--org", "acme", "--name", "reporting bot")
    admin_id, admin_key = create(capsys, "--org", "globex", "--cluster-admin")
    with open_store(Settings().database) as store:
        found = authenticate(store, key, now=datetime.now(UTC))
        assert found is not None and (found.id, found.org, found.role) == (key_id, "acme", "member")
        admin = authenticate(store, admin_key, now=datetime.now(UTC))
        assert admin is not None and admin.role == "admin" and admin.cluster_admin
    code, out, _ = run(capsys, "api-keys", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["id"] for r in rows] == [key_id, admin_id]
    assert rows[0]["name"] == "reporting bot" and rows[0]["prefix"] == key[:11]
    code, table, _ = run(capsys, "api-keys", "list", "--org", "acme")
    assert code == 0 and key_id in table and admin_id not in table
    for listing in (out, table):
        assert key not in listing and key[11:20] not in listing and admin_key[11:20] not in listing
    code, out, _ = run(capsys, "api-keys", "revoke", key_id)
    assert code == 0 and out.startswith(f"revoked {key_id}")
    with open_store(Settings().database) as store:
        assert authenticate(store, key, now=datetime.now(UTC)) is None
    assert json.loads(run(capsys, "api-keys", "list", "--json")[1])[0]["revoked_at"] is not None


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["create", "--org", "not valid"], 2, "organisation id"),
        (["create", "--org", "acme", "--role", "owner"], 2, "role must be one of admin, member"),
        (["create", "--org", "acme", "--role", "member", "--cluster-admin"], 2, "must have role admin"),
        (["revoke", "key_nope"], 3, "no API key 'key_nope'"),
        (["create"], 2, "--org"),
    ],
)
def test_errors_are_one_line_with_the_exit_code(
    env: Path, capsys: pytest.CaptureFixture[str], args: list[str], exit_code: int, message: str
) -> None:
    code, out, err = run(capsys, "api-keys", *args)
    assert code == exit_code
    assert message in err and "Traceback" not in err + out
    if exit_code != 2 or args != ["create"]:
        assert len(err.strip().splitlines()) == 1
