"""The page, end to end in headless Chromium (Debian's, driven by Playwright): it loads without
console errors, shows each model's answer for an uploaded test-set image (the answer `fmnist
predict` gives for the same file), and answers a drawing. It fails, not skips, without Chromium."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
from conftest import cli, start_server
from PIL import Image
from playwright.sync_api import sync_playwright

from fmnist.data import load_fashion_mnist
from fmnist.jobs.export import export_run
from fmnist.jobs.train import train_run
from fmnist.training.config import TrainConfig

pytestmark = pytest.mark.realdata

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browser download is never used
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    real = load_fashion_mnist(download=False, progress=False)
    # A tenth of the training images is enough for models that tell garments apart, in seconds.
    part = dataclasses.replace(real, train_images=real.train_images[:6000], train_labels=real.train_labels[:6000])
    for name in ("shallow", "simple_cnn"):
        cfg = TrainConfig(model=name, epochs=1, batch_size=128, device="cpu", quiet=True)
        train_run(cfg, root / "runs" / name, data=part)
        export_run(root / "runs" / name, data=real)  # as deployed: the servers load the checked file
    shutil.copytree(root / "runs" / "shallow", root / "runs" / "extra")  # listed, not served at first
    image = root / "test-image-0.png"  # a real test-set image, as a user would save it
    Image.fromarray((real.test_images[0, 0].numpy() * 255).round().astype(np.uint8)).save(image)
    base, proc = start_server("runs/shallow", "runs/simple_cnn", cwd=root)  # its runs view lists runs/
    yield root / "runs", base + "/", image
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, served):
    _, base, _ = served
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base)
    page.get_by_test_id("status").filter(has_text="2 models ready").wait_for(timeout=30_000)
    yield page
    assert errors == []  # no console errors, no uncaught exceptions, first load to last click
    page.close()


def shown_labels(page) -> dict[str, str]:
    page.wait_for_function(
        "document.querySelectorAll('[data-testid=model-card][data-top]').length == 2", timeout=30_000
    )
    cards = page.locator("[data-testid=model-card]")
    return {
        cards.nth(i).get_attribute("data-model"): cards.nth(i).get_attribute("data-top") for i in range(cards.count())
    }


def test_an_uploaded_test_image_gets_the_label_predict_gives(page, served, capsys):
    root, _, image = served
    page.get_by_test_id("file").set_input_files(str(image))
    labels = shown_labels(page)
    for name in ("shallow", "simple_cnn"):
        code, out, _ = cli(capsys, "predict", root / name, image, "--json", "--top-k", "1")
        assert code == 0 and labels[name] == json.loads(out)[0]["predictions"][0]["label"], (name, labels)
    assert page.get_by_test_id("preview").get_attribute("data-ready") == "1"
    assert "test-image-0.png" in page.get_by_test_id("status").inner_text()
    cards = page.locator("[data-testid=model-card]")
    assert cards.nth(0).locator(".bar").count() == 3  # the top three by default
    assert "101,770 parameters" in cards.nth(0).inner_text() and "test accuracy" in cards.nth(0).inner_text()


def test_a_drawing_gets_a_preview_and_an_answer(page, served, tmp_path):
    pad = page.get_by_test_id("pad").bounding_box()
    page.get_by_test_id("topk").select_option("5")
    x0, y0 = pad["x"] + 80, pad["y"] + 60
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x0 + 120, y0), (x0 + 120, y0 + 160), (x0, y0 + 160), (x0, y0)):  # a square, like a bag
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    labels = shown_labels(page)
    assert set(labels) == {"shallow", "simple_cnn"} and all(labels.values())
    preview = page.get_by_test_id("preview")
    assert preview.get_attribute("data-ready") == "1" and preview.get_attribute("src").startswith(
        "data:image/png;base64,"
    )
    assert page.locator("[data-testid=model-card]").nth(1).locator(".bar").count() == 5
    assert "drawing.png" in page.get_by_test_id("status").inner_text()
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] == 1280
    page.get_by_test_id("clear").click()
    assert page.get_by_test_id("preview").get_attribute("data-ready") is None


def test_each_model_card_shows_where_it_looked_for_its_top_class(page, served):
    _, _, image = served
    page.get_by_test_id("file").set_input_files(str(image))
    labels = shown_labels(page)
    page.wait_for_function("document.querySelectorAll('[data-testid=saliency]').length == 2", timeout=30_000)
    for name, label in labels.items():
        card = page.locator(f"[data-testid=model-card][data-model={name}]")
        img = card.get_by_test_id("saliency")
        assert img.get_attribute("alt") == f"where {name} looked for {label}"
        assert img.get_attribute("src").startswith("data:image/png;base64,")
        assert img.evaluate("i => i.naturalWidth") == 112


@pytest.fixture
def runs_page(browser, served):
    """A server of its own (serving a run changes what it serves), with the page open."""
    runs, _, _ = served
    base, proc = start_server("runs/shallow", "runs/simple_cnn", cwd=runs.parent)
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(base + "/")
    yield page
    page.close()
    proc.terminate()
    proc.wait(timeout=30)


def test_the_runs_view_lists_sorts_and_serves_a_run(runs_page):
    page = runs_page
    rows = page.locator("[data-testid=run-row]")
    rows.first.wait_for(timeout=30_000)
    assert sorted(rows.nth(i).get_attribute("data-run") for i in range(rows.count())) == [
        "runs/extra",
        "runs/shallow",
        "runs/simple_cnn",
    ]
    assert "served as shallow" in page.locator("[data-testid=run-row][data-run='runs/shallow']").inner_text()
    page.locator("#runs th[data-sort=run]").click()  # by name, A to Z
    assert [rows.nth(i).get_attribute("data-run") for i in range(3)] == [
        "runs/extra",
        "runs/shallow",
        "runs/simple_cnn",
    ]
    page.locator("#runs th[data-sort=run]").click()  # and back
    assert rows.nth(0).get_attribute("data-run") == "runs/simple_cnn"
    assert page.locator("[data-testid=run-row] canvas.curve").count() == 3
    assert page.locator("[data-testid=run-row] canvas[data-points]").count() == 0  # one epoch each: no line yet
    page.locator("[data-testid=run-row][data-run='runs/extra'] [data-testid=serve-run]").click()
    page.wait_for_function("document.querySelectorAll('[data-testid=model-card]').length == 3", timeout=30_000)
    page.get_by_test_id("status").filter(has_text="now serving runs/extra as extra").wait_for(timeout=30_000)
    assert "served as extra" in page.locator("[data-testid=run-row][data-run='runs/extra']").inner_text()
