"""``make gallery``: what a recipient gets, as small PNGs in docs/gallery/, from a real run of the demo.

    .venv/bin/python -m bench.gallery            # writes docs/gallery/*.png (each well under 300 KB)

One run of the demo's ``weekly-regional-sales`` report for one regional manager, through the deliver-report flow on
an ephemeral Prefect server, into a throwaway home (local bucket folder, email outbox), on the demo warehouse; then
one recipient whose scope has no rows. From the files it makes:

- ``pdf-page-1.png``: the PDF's first page (pdftoppm, from Debian's poppler-utils);
- ``email.png``: the email's HTML as a mail client shows it, the inline chart included (headless Chromium);
- ``xlsx-summary.png``: the XLSX Summary sheet with its native chart, as LibreOffice draws it (headless LibreOffice
  Calc converts the workbook to PDF, pdftoppm draws that);
- ``pdf-no-rows.png``: the first page of a recipient with no rows;
- ``pdf-de-DE-last-page.png``: the last page of the same week for a manager who reads German (``locale: de-DE``):
  German numbers, money and dates, and the table's totals row.

A tool that is not installed is said so, and its picture is skipped: the others are still made. Exit status 1 when
any picture was skipped, so a gallery is never silently incomplete.
"""

from __future__ import annotations

import base64
import email
import os
import shutil
import subprocess
import sys
import tempfile
from email import policy
from pathlib import Path

from PIL import Image, ImageChops

from bulletin.settings import PROJECT_ROOT

GALLERY = PROJECT_ROOT / "docs" / "gallery"
REPORT, RECIPIENT, AS_OF = "weekly-regional-sales", "rm-emea-north", "2026-10-31"
#: The same region's other manager, who reads German (locale de-DE, Europe/Berlin: bulletin/demo_data.py).
GERMAN_READER = "rm-emea-north-2"
#: At most this wide: legible in a README, small in git.
WIDTH = 1000
TIMEOUT = 180


def main(out: Path = GALLERY) -> int:
    """Draw the gallery into ``out``; 1 if a tool was missing. The caller's environment is as it was afterwards:
    the run's throwaway home and public URL are set in os.environ only while it runs."""
    saved = dict(os.environ)
    try:
        return _draw(out)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _draw(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    missing: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bulletin-gallery-") as folder:
        home = Path(folder) / "home"
        _use_home(home)
        files = _deliver(home)
        work = Path(folder)
        steps = [
            ("pdf-page-1.png", "pdftoppm", lambda: _pdf_page(files["pdf"], work / "page")),
            ("email.png", "chromium", lambda: _email(files["eml"], work)),
            ("xlsx-summary.png", "soffice", lambda: _xlsx(files["xlsx"], work)),
            ("pdf-no-rows.png", "pdftoppm", lambda: _pdf_page(files["empty-pdf"], work / "empty")),
            ("pdf-de-DE-last-page.png", "pdftoppm", lambda: _pdf_page(files["de-pdf"], work / "de", last=True)),
        ]
        for name, tool, make in steps:
            if shutil.which(tool) is None:
                print(f"skipped {name}: {tool} is not installed (Debian: {_PACKAGES[tool]})")
                missing.append(name)
                continue
            _save(make(), out / name)
    return 1 if missing else 0


_PACKAGES = {"pdftoppm": "poppler-utils", "chromium": "chromium", "soffice": "libreoffice-calc-nogui"}


def _use_home(home: Path) -> None:
    """A throwaway home with the demo warehouse, the email outbox and the local bucket; nothing of the caller's."""
    from bulletin.demo_data import build_demo_warehouse

    for name in [n for n in os.environ if n.startswith("BULLETIN_")]:
        del os.environ[name]
    home.mkdir(parents=True)
    os.environ["BULLETIN_HOME"] = str(home)
    # As a deployed Bulletin sends it: with its public address, every email carries its one-click unsubscribe link.
    os.environ["BULLETIN_PUBLIC_URL"] = "https://bulletin.example.com"
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    build_demo_warehouse(home / "warehouse.duckdb")


def _deliver(home: Path) -> dict[str, Path]:
    from bulletin.edge.cli.delivery import run_report

    manifest = run_report(REPORT, recipients=[RECIPIENT], parameters={"as_of": AS_OF})
    if manifest.delivered != 1:
        raise SystemExit(f"the gallery's run did not deliver: {manifest.status.value} {manifest.deliveries}")
    (pdf,) = (home / "bucket").rglob("*.pdf")
    (xlsx,) = (home / "bucket").rglob("*.xlsx")
    (eml,) = (home / "outbox").glob("*.eml")
    # A day with no sales for this region: the recipient is told so in a sentence (docs/reports.md).
    empty = run_report(REPORT, recipients=[RECIPIENT], formats=["pdf"], parameters={"as_of": "2020-01-07"})
    (empty_pdf,) = [p for p in (home / "bucket").rglob("*.pdf") if p != pdf]
    if empty.deliveries[0].artifacts[0].rows != 0:
        raise SystemExit("the gallery's empty run found rows")
    # A German reader of the same week: German numbers and dates, and the table's totals row on its last page.
    run_report(REPORT, recipients=[GERMAN_READER], formats=["pdf"], parameters={"as_of": AS_OF})
    (de_pdf,) = [p for p in (home / "bucket").rglob("*.pdf") if GERMAN_READER in str(p)]
    return {"pdf": pdf, "xlsx": xlsx, "eml": eml, "empty-pdf": empty_pdf, "de-pdf": de_pdf}


def _pdf_page(pdf: Path, stem: Path, *, last: bool = False) -> Path:
    """Page 1 of ``pdf`` as a PNG, or with ``last`` its last page."""
    from pypdf import PdfReader

    page = str(len(PdfReader(pdf).pages)) if last else "1"
    subprocess.run(
        ["pdftoppm", "-r", "90", "-f", page, "-l", page, "-singlefile", "-png", str(pdf), str(stem)],
        check=True,
        timeout=TIMEOUT,
    )
    return stem.with_suffix(".png")


def _email(eml: Path, work: Path) -> Path:
    """The HTML body with its inline chart put back where ``cid:`` points, as a 640-pixel-wide client shows it."""
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    for part in message.walk():
        if part.get_content_type() == "image/png" and part.get("Content-ID"):
            cid = str(part["Content-ID"]).strip("<>")
            data = base64.b64encode(part.get_payload(decode=True)).decode()
            html = html.replace(f"cid:{cid}", f"data:image/png;base64,{data}")
    page, shot = work / "email.html", work / "email-shot.png"
    page.write_text(html, encoding="utf-8")
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=680,1400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        timeout=TIMEOUT,
        capture_output=True,
    )
    return shot


def _xlsx(xlsx: Path, work: Path) -> Path:
    """The Summary sheet (the workbook's first, with the chart) as LibreOffice prints it."""
    profile = work / "lo-profile"
    subprocess.run(
        [
            "soffice",
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            str(work),
            str(xlsx),
        ],
        check=True,
        timeout=TIMEOUT,
        capture_output=True,
    )
    return _pdf_page(work / f"{xlsx.stem}.pdf", work / "xlsx")


def _save(made: Path, target: Path) -> None:
    """Trimmed of its white margin, at most ``WIDTH`` wide, in 256 colours: small enough for git and a README."""
    with Image.open(made) as image:
        picture = image.convert("RGB")
    box = ImageChops.difference(picture, Image.new("RGB", picture.size, "white")).getbbox()
    if box:
        left, top, right, bottom = box
        picture = picture.crop((max(0, left - 16), max(0, top - 16), right + 16, bottom + 16))
    if picture.width > WIDTH:
        picture = picture.resize((WIDTH, round(picture.height * WIDTH / picture.width)), Image.Resampling.LANCZOS)
    picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    shown = target.relative_to(PROJECT_ROOT) if target.is_relative_to(PROJECT_ROOT) else target
    print(f"wrote {shown} ({target.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    sys.exit(main())
