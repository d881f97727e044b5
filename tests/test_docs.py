"""The documentation site builds with --strict (a broken link or reference fails), and, opened in
Chromium with every outside host blocked, renders its pages and asks for nothing outside; the
README is a front page (at most about 200 lines) whose commands parse as fmnist's."""

import re
import shlex
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import cli
from test_page import CHROMIUM, FLAGS

ROOT = Path(__file__).parent.parent
PAGES = ["", "python-api/", "your-network/", "serving/", "notebooks/study/", "benchmarks/", "architecture/"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return out


def test_the_site_reads_offline(site):
    from playwright.sync_api import sync_playwright

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    outside = []

    def route(r):
        if r.request.url.startswith(base):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page()
            page.route("**/*", route)
            for path in PAGES:
                page.goto(base + path, wait_until="networkidle")
                assert page.locator("h1").first.inner_text().strip(), path
                assert page.locator("link[rel=stylesheet]").count() and page.evaluate(
                    "getComputedStyle(document.querySelector('.md-header')).position"
                ) in ("sticky", "fixed"), f"{path}: the theme's styles did not load"
            page.goto(base + "python-api/")
            assert page.locator("[id='fmnist.api.calls.train']").count() == 1  # the reference, from the docstrings
            browser.close()
    finally:
        server.shutdown()
    assert outside == []


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("fmnist ")]


def test_the_readme_is_a_front_page_whose_commands_are_fmnist_s(capsys, monkeypatch):
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
    commands = readme_commands()
    assert len(commands) >= 5
    from fmnist.cli.main import build_parser

    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # every flag it shows is one fmnist takes (a UsageError otherwise)
    monkeypatch.chdir(ROOT)
    code, out, err = cli(capsys, *commands[0])  # the first runs whole: a network file's table
    assert code == 0 and "477,610 parameters" in out, err
