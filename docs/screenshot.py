"""Make docs/serve.png and docs/runs.png, the README's pictures of `fmnist serve`: the study's four
models answering for a test-set image placed, scaled up, on a light page (as a photo would be), with
where each looked; and the page's runs view of the runs in this folder.

    .venv/bin/python docs/screenshot.py        # after `make study`; needs Debian's chromium
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

from fmnist.data import CLASSES, load_fashion_mnist

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    data = load_fashion_mnist(download=False, progress=False)
    index = next(i for i, y in enumerate(data.test_labels.tolist()) if CLASSES[y] == "Sneaker")
    a = (data.test_images[index, 0].numpy() * 255).round().astype(np.uint8)
    photo = Image.new("L", (360, 260), 235)
    photo.paste(Image.fromarray(255 - a).resize((196, 196), Image.Resampling.BICUBIC), (82, 32))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "fmnist", "serve", "--port", str(port)], cwd=ROOT)
    try:
        base = f"http://127.0.0.1:{port}/"
        for _ in range(300):
            try:
                if httpx.get(base + "v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
            path = Path(tmp) / "sneaker-photo.png"
            photo.convert("RGB").save(path)
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(base)
            page.get_by_test_id("status").filter(has_text="models ready").wait_for(timeout=60_000)
            page.get_by_test_id("file").set_input_files(str(path))
            page.wait_for_function("document.querySelectorAll('[data-testid=model-card][data-top]').length == 4")
            page.wait_for_function("document.querySelectorAll('[data-testid=saliency]').length == 4")
            page.locator("main > section").nth(2).screenshot(path=str(ROOT / "docs" / "serve.png"))
            page.locator("[data-testid=run-row]").first.wait_for()
            page.locator("#runs").screenshot(path=str(ROOT / "docs" / "runs.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {ROOT / 'docs' / 'serve.png'} and {ROOT / 'docs' / 'runs.png'}")


if __name__ == "__main__":
    main()
