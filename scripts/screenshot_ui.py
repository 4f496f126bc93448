"""Screenshots of the running demo stack's Airflow UI, for the documentation.

    make demo && make screenshot      # both pages below
    python -m scripts.screenshot_ui --page deployments

Debian's chromium, headless, driven by Playwright (``executable_path``: never a browser
Playwright downloads). The browser is given the UI's login cookie (a JWT from
``POST /auth/token``, as the UI's own login sets it), opens each page, waits until the UI has
drawn what the page is for, and captures it; the image is then scaled down and reduced to
a palette to keep the repository small.

Pages:
  dag          the ``churn_training`` DAG's page (the demo model's training DAG, its runs)
               -> docs/getting-started/airflow-ui.png
  deployments  the plugin's deployments view (``/plugin/deployments``, the navigation's
               *Deployments* entry) with the demo's model server
               -> docs/concepts/deployments-view.png
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Shot:
    path: str  # in the UI
    out: Path
    what: str  # what "drawn" means, for the error message
    drawn: Callable[[Page], Locator]  # shown once the page has drawn what it is for


SHOTS = {
    "dag": Shot("/dags/churn_training", ROOT / "docs" / "getting-started" / "airflow-ui.png",
                "the DAG's runs (a task's name in its grid)",
                lambda page: page.get_by_text("deployment_trigger").first),
    "deployments": Shot("/plugin/deployments",
                        ROOT / "docs" / "concepts" / "deployments-view.png",
                        "a row of the deployments view (in the UI's frame)",
                        lambda page: page.frame_locator("iframe").locator("tr.deployment")
                        .first),
}


def _capture(page: Page, airflow: str, shot: Shot, timeout: float) -> bytes:
    page.goto(f"{airflow}{shot.path}")
    try:
        shot.drawn(page).wait_for(timeout=timeout * 1000)
    except PlaywrightError as err:
        raise SystemExit(f"the UI at {airflow}{shot.path} did not draw {shot.what} within "
                         f"{timeout:.0f}s: is `make demo` running, with a finished run?"
                         ) from err
    page.wait_for_load_state("networkidle")
    time.sleep(1.5)  # let icons and fonts settle
    return page.screenshot()


def _save(png: bytes, out: Path, scale: float) -> str:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((round(image.width * scale), round(image.height * scale)),
                         Image.Resampling.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    return f"{shown}: {image.width}x{image.height}, {out.stat().st_size // 1024} KiB"


def main(argv: list[str] | None = None) -> int:
    from ctcd.stack.config import ADMIN_PASSWORD, ADMIN_USER

    parser = argparse.ArgumentParser(prog="python -m scripts.screenshot_ui", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--airflow-url", default="http://127.0.0.1:"
                        f"{os.environ.get('CTCD_AIRFLOW_PORT', '8080')}")
    parser.add_argument("--page", choices=sorted(SHOTS), action="append",
                        help="the page to capture (repeatable; default: all)")
    parser.add_argument("--out", type=Path, help="where to write it (one --page only)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=820)
    parser.add_argument("--scale", type=float, default=0.7, help="of the captured size")
    parser.add_argument("--timeout", type=float, default=90, help="seconds per page")
    args = parser.parse_args(argv)
    names = args.page or sorted(SHOTS)
    if args.out is not None and len(names) != 1:
        parser.error("--out needs exactly one --page")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("chromium is not installed: scripts/system-packages.sh ensure screenshot")
    try:
        answer = httpx.post(f"{args.airflow_url}/auth/token", timeout=10,
                            json={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
        answer.raise_for_status()
    except httpx.HTTPError as err:
        raise SystemExit(f"no Airflow API server answers at {args.airflow_url} ({err}): "
                         "start the stack with `make demo` first") from err
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, headless=True)
        try:
            context = browser.new_context(viewport={"width": args.width,
                                                    "height": args.height})
            context.add_cookies([{"name": "_token", "value": answer.json()["access_token"],
                                  "url": args.airflow_url}])
            page = context.new_page()
            for name in names:
                shot = SHOTS[name]
                png = _capture(page, args.airflow_url, shot, args.timeout)
                print(_save(png, args.out or shot.out, args.scale))
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
