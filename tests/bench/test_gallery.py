"""``make gallery`` (bench/gallery.py): a real run of the demo report drawn to small PNGs; a missing tool is said so
and makes the exit status 1, never a silently incomplete gallery. The session's Prefect test server runs the flow."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from bench import gallery


@pytest.mark.usefixtures("prefect_api")
def test_the_gallery_draws_what_recipients_get_and_says_what_it_could_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("BULLETIN_")]:
        monkeypatch.delenv(name)
    # The gallery sets its own home and public URL in os.environ: registered here, so both are undone after.
    monkeypatch.setenv("BULLETIN_HOME", str(tmp_path / "unused"))
    monkeypatch.setenv("BULLETIN_PUBLIC_URL", "https://unused.example.com")
    which = shutil.which
    monkeypatch.setattr(gallery.shutil, "which", lambda tool: None if tool == "soffice" else which(tool))
    out = tmp_path / "gallery"
    assert gallery.main(out) == 1, "a skipped picture fails the command"
    said = capsys.readouterr().out
    assert "skipped xlsx-summary.png: soffice is not installed (Debian: libreoffice-calc-nogui)" in said
    expected = ["pdf-page-1.png", "pdf-no-rows.png", "pdf-de-DE-last-page.png"]
    expected += ["email.png"] if which("chromium") else []
    for name in expected:
        path = out / name
        assert path.stat().st_size < 300_000, f"{name} is too big for git"
        with Image.open(path) as image:
            assert image.format == "PNG" and 400 <= image.width <= gallery.WIDTH
    assert not (out / "xlsx-summary.png").exists()
