"""``bulletin preferences show|set|clear`` through the real entry point, on the demo warehouse's audiences: the
organisation found from the audiences (or --org), one-line errors with the tree's exit codes, and the levels the
API shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bulletin.edge.cli import main

ACME = "rm-emea-north"  # acme's, in the demo report audiences


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["preferences", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_set_show_and_clear(bulletin_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "set", ACME, "--channels", "s3, email")
    assert code == 0, err
    assert "every report: EMAIL, S3 (by cli)" in out
    assert run(capsys, "set", ACME, "--none", "--report", "weekly-regional-sales")[0] == 0
    code, out, _ = run(capsys, "show", ACME, "--json")
    shown = json.loads(out)
    assert shown["org"] == "acme"
    assert [(p["report_id"], p["channels"]) for p in shown["preferences"]] == [
        (None, ["EMAIL", "S3"]),
        ("weekly-regional-sales", []),
    ]
    code, out, _ = run(capsys, "clear", ACME, "--report", "weekly-regional-sales")
    assert code == 0 and "removed 1 preference(s)" in out and "weekly-regional-sales" not in out
    code, out, _ = run(capsys, "clear", ACME)
    assert "no preference of their own" in out


@pytest.mark.parametrize(
    ("args", "exit_code", "words"),
    [
        (["show", "nobody-at-all"], 3, "give --org"),
        (["set", ACME, "--channels", "FAX"], 2, "--channels takes"),
        (["set", ACME], 2, "--channels"),
        (["set", ACME, "--channels", "EMAIL", "--none"], 2, "not both"),
        (["set", ACME, "--channels", "EMAIL", "--report", "no-such-report"], 3, "no report"),
    ],
)
def test_refusals_are_one_line(
    bulletin_env: Path, capsys: pytest.CaptureFixture[str], args: list[str], exit_code: int, words: str
) -> None:
    code, out, err = run(capsys, *args)
    assert code == exit_code and words in err, (code, out, err)
    assert len(err.strip().splitlines()) == 1


def test_an_org_given_needs_no_audience(bulletin_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "set", "someone-new", "--org", "acme", "--channels", "EMAIL")
    assert code == 0 and "every report: EMAIL" in out, err


def test_serve_says_at_start_when_emails_carry_no_unsubscribe_link(tmp_path: Path) -> None:
    from bulletin.edge.cli.serve import startup_notes
    from bulletin.settings import Settings

    assert startup_notes(Settings(home=tmp_path)) == [
        "BULLETIN_PUBLIC_URL is not set: emails carry no unsubscribe link (List-Unsubscribe)"
    ]
    assert startup_notes(Settings(home=tmp_path, public_url="https://bulletin.example.com")) == []
