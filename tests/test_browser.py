"""A real browser annotates a small image task to completion through the pages.

Needs headless Chromium and its driver from the system packages (Debian: ``apt-get install -y
chromium chromium-driver``) and ``pip install selenium``; run with ``pytest -m browser``.
Screenshots are kept in ``tests/artifacts/browser/`` (not committed).
"""
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CROWDINFER_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("CROWDINFER_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).parent / "artifacts" / "browser"
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _images(folder: Path, n: int = 9) -> dict:
    import matplotlib.image

    rng = np.random.default_rng(0)
    truth = {}
    for i in range(n):
        name = list(COLOURS)[i % 3]
        pixels = np.tile(np.array(COLOURS[name], np.uint8), (16, 16, 1))
        pixels = np.clip(pixels + rng.integers(-25, 25, pixels.shape), 0, 255).astype(np.uint8)
        matplotlib.image.imsave(folder / f"swatch{i}.png", pixels)
        truth[f"swatch{i}"] = name
    pd.DataFrame({"item": list(truth), "image": [f"{k}.png" for k in truth]}).to_csv(
        folder / "items.csv", index=False)
    return truth


@pytest.fixture()
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="crowdinfer-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1100,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture()
def server(tmp_path):
    import uvicorn

    from crowdinfer.serve import Project, create_app, create_project

    truth = _images(tmp_path)
    create_project(tmp_path / "proj", tmp_path / "items.csv", list(COLOURS), update_every=3,
                   annotators=["alice", "bob"], early_stop=None)
    project = Project(tmp_path / "proj", update_interval=0.3)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(project), host="127.0.0.1", port=port,
                                       log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", project, truth
    srv.should_exit = True
    thread.join(timeout=60)


def _shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS.parent / ".gitignore").write_text("*\n")
    driver.save_screenshot(str(ARTIFACTS / name))


def test_annotate_an_image_task_to_completion_in_chromium(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, project, truth = server
    classes = list(COLOURS)
    wait = WebDriverWait(browser, 30)
    seen = []
    for n, name in enumerate(("alice", "bob")):
        browser.get(f"{base}/a/{project.tokens[name]}")
        while True:
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                       in ("item", "waiting", "finished"))
            body = browser.find_element(By.TAG_NAME, "body")
            if body.get_attribute("data-state") != "item":
                break
            item = body.get_attribute("data-item")
            image = browser.find_element(By.ID, "image")
            wait.until(lambda d: d.execute_script(
                "const i = document.getElementById('image'); return i.complete && i.naturalWidth > 0;"))
            assert image.is_displayed() and image.get_attribute("src").endswith(
                f"/api/media/{item}?token={project.tokens[name]}")
            if not seen:
                _shot(browser, "annotate.png")
            label = classes.index(truth[item])
            if len(seen) % 2 == 0:  # a click on the class button
                browser.find_element(By.CSS_SELECTOR, f"#choices button[data-label='{label}']").click()
            else:  # or its number key
                body.send_keys(str(label + 1))
            seen.append((name, item))
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-item") != item)
        assert len([s for s in seen if s[0] == name]) >= 1
    # every item got two agreeing answers: the loop finishes them and stops; the page says so
    browser.get(f"{base}/a/{project.tokens['alice']}")
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "finished")
    assert "finished" in browser.find_element(By.ID, "message").text
    _shot(browser, "finished.png")
    ledger = project.session.ledger.read()
    assert len(ledger) == len(seen) and not ledger.duplicated(["item", "worker"]).any()
    answers = {(project.session.worker_ids[w], project.item_ids[i]): classes[z]
               for i, w, z in ledger[["item", "worker", "label"]].itertuples(index=False)}
    assert answers == {(w, i): truth[i] for w, i in seen}  # every click and key press, as given
    labels = project.labels_frame()
    assert labels["finished"].all() and (labels["label"] == labels["item"].map(truth)).all()
    # the requester's dashboard renders the progress, the table and the confusions
    browser.set_window_size(1100, 1500)
    browser.get(f"{base}/r/{project.spec['requester_token']}")
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#workers tbody tr")) == 2)
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#confusions figure")) == 2)
    assert "stopped" in browser.find_element(By.ID, "status").text
    _shot(browser, "dashboard.png")
