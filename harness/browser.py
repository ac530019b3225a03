"""Debian's chromium as Playwright drives it for the console's tests, benchmark and screenshots."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium")  # Debian's package (make install), never `playwright install`
# Headless in a container, as CI runs: no sandbox, no GPU, nothing fetched in the background.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
