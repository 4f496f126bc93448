"""A screenshot of the Airflow UI of the running demo stack, for the documentation.

    make demo && make screenshot      # writes docs/getting-started/airflow-ui.png

Debian's chromium, headless, driven over the Chrome DevTools Protocol (a websocket): it is
given the UI's login cookie (a JWT from ``POST /auth/token``, as the UI's own login sets
it), opens the ``churn_training`` DAG's page (the demo model's training DAG), waits until
the UI has drawn its runs, and captures the page; the image is then scaled down to keep the
repository small.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import websockets
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "getting-started" / "airflow-ui.png"
# drawn once the grid of the DAG's runs is there (a task's name in it)
READY = "document.body.innerText.includes('deployment_trigger')"


class _Page:
    def __init__(self, socket: Any) -> None:
        self.socket, self.ids = socket, count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        await self.socket.send(json.dumps({"id": message_id, "method": method,
                                           "params": params}))
        while True:  # events arrive in between; the answer carries our id
            answer = json.loads(await self.socket.recv())
            if answer.get("id") == message_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return dict(answer.get("result", {}))


async def _capture(debugger: str, airflow: str, token: str, path: str, width: int,
                   height: int, timeout: float) -> bytes:
    async with websockets.connect(debugger, max_size=64 * 2**20) as socket:
        page = _Page(socket)
        await page.call("Network.enable")
        await page.call("Network.setCookie", name="_token", value=token, url=airflow)
        await page.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=False)
        await page.call("Page.navigate", url=f"{airflow}{path}")
        deadline = time.monotonic() + timeout
        while True:
            found = await page.call("Runtime.evaluate", expression=READY, returnByValue=True)
            if found.get("result", {}).get("value") is True:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the UI at {airflow}{path} did not draw the DAG's runs within "
                                 f"{timeout:.0f}s: is `make demo` running, with a finished run?")
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # let the grid's icons and fonts settle
        shot = await page.call("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])


def _chromium(port: int, profile: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("chromium is not installed: scripts/system-packages.sh ensure screenshot")
    return subprocess.Popen(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _debugger_url(port: int, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
            return str(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"])
        except (httpx.HTTPError, StopIteration, ValueError):
            if time.monotonic() > deadline:
                raise SystemExit("chromium's DevTools endpoint did not come up") from None
            time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    from ctcd.stack.config import ADMIN_PASSWORD, ADMIN_USER
    from ctcd.stack.processes import free_port

    parser = argparse.ArgumentParser(prog="python -m scripts.screenshot_ui", description=__doc__)
    parser.add_argument("--airflow-url", default="http://127.0.0.1:"
                        f"{os.environ.get('CTCD_AIRFLOW_PORT', '8080')}")
    parser.add_argument("--path", default="/dags/churn_training",
                        help="the UI page to capture")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=820)
    parser.add_argument("--scale", type=float, default=0.7, help="of the captured size")
    parser.add_argument("--timeout", type=float, default=90)
    args = parser.parse_args(argv)
    try:
        answer = httpx.post(f"{args.airflow_url}/auth/token", timeout=10,
                            json={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
        answer.raise_for_status()
    except httpx.HTTPError as err:
        raise SystemExit(f"no Airflow API server answers at {args.airflow_url} ({err}): "
                         "start the stack with `make demo` first") from err
    token = answer.json()["access_token"]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ctcd-chromium-") as profile:
        browser = _chromium(port, profile)
        try:
            png = asyncio.run(_capture(_debugger_url(port), args.airflow_url, token, args.path,
                                       args.width, args.height, args.timeout))
        finally:
            browser.terminate()
            browser.wait(timeout=30)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((round(image.width * args.scale), round(image.height * args.scale)),
                         Image.Resampling.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"{args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}: "
          f"{image.width}x{image.height}, {args.out.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
