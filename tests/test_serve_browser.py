"""The ``dldl serve`` page end-to-end in headless Chromium (Debian's chromium + chromium-driver, via selenium):
upload a bundled photo, read the rendered ages, compare them with the API's, take a screenshot."""

import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import load_benchmark

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)",
                allow_module_level=True)
pytest.importorskip("selenium", reason="selenium (the dev extra) is not installed")

import dldl  # noqa: E402
from dldl.assets import PHOTOS_DIR  # noqa: E402
from dldl.predictor import TASKS  # noqa: E402

if "tiny_age_net-utkface" not in dldl.list_pretrained():
    pytest.skip("no shipped model in this checkout", allow_module_level=True)

server_load = load_benchmark("server_load")
PHOTO = PHOTOS_DIR / "steward-masweneng-Ws4YEqBafus-unsplash.jpg"  # two faces
# Chromium with no background traffic: the network outside is closed
CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1100,900"]


def _serve(models):
    """``dldl serve``'s app for ``models`` under uvicorn on a free port, in a background thread."""
    import uvicorn

    from dldl.serve import create_app

    port = server_load.free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(models), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return port, uv, thread


@pytest.fixture(scope="module")
def server():
    """``dldl serve --task both``: yields the port."""
    port, uv, thread = _serve(dict(TASKS))
    yield port
    uv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def age_server():
    """``dldl serve`` (the age model only): yields the port."""
    port, uv, thread = _serve({"age": TASKS["age"]})
    yield port
    uv.should_exit = True
    thread.join(10)


@pytest.fixture
def browser(tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must never try to download a driver or browser
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def settle(driver, action, timeout: float = 60) -> str:
    """Run ``action()`` (something that makes the page estimate a photo); the page's final state
    (``done`` or ``error``)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.body.dataset.state = 'waiting';")
    action()
    WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                         in ("done", "error"))
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def upload(driver, path: Path, timeout: float = 60) -> str:
    """Pick ``path`` in the page's file input; the page's final state (``done`` or ``error``)."""
    from selenium.webdriver.common.by import By

    return settle(driver, lambda: driver.find_element(By.ID, "file").send_keys(str(path)), timeout)


# a drop or a paste of the bundled photo, as the browser would deliver it
GIVE_PHOTO_JS = """
const [kind, name, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
fetch('/samples/' + name).then((r) => r.blob()).then((blob) => {
  const data = new DataTransfer();
  data.items.add(new File([blob], name, {type: 'image/jpeg'}));
  if (kind === 'drop') document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
  else document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true}));
  done(true);
});
"""


def test_upload_photo_in_browser(server, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base = f"http://127.0.0.1:{server}"
    browser.get(base + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#task option"))
    assert browser.find_element(By.ID, "task-label").is_displayed()  # two tasks served: a choice
    assert [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#task option")] == ["age", "beauty"]
    state = upload(browser, PHOTO)
    assert state == "done", browser.find_element(By.ID, "error").text
    shown = [float(e.text) for e in browser.find_elements(By.CSS_SELECTOR, ".face-age")]
    api = server_load.send(server, server_load.Upload("valid", PHOTO.name, PHOTO.read_bytes()))["json"]
    assert len(shown) == len(api["faces"]) == 2
    assert shown == pytest.approx([face["age"] for face in api["faces"]], abs=0.1)
    labels = len(api["faces"][0]["distribution"]["labels"])  # the served model's label set (117 ages for the default)
    assert labels == dldl.load(TASKS["age"]).labels.num_labels
    assert len(browser.find_elements(By.CSS_SELECTOR, ".face-dist rect")) == 2 * labels  # a bar per label, per face
    axis = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".face-dist text")]
    assert "age (bar height: probability)" in axis and "0" in axis  # a labelled x axis under each chart
    assert len(browser.find_elements(By.CSS_SELECTOR, "canvas.face-crop")) == 2  # each face's crop beside its row
    favicon = browser.execute_async_script("fetch('/favicon.svg').then((r) => arguments[0](r.status + ' ' + r.headers.get('content-type')))")
    assert favicon == "200 image/svg+xml"
    canvas = browser.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height];")
    assert canvas == [500, 500]  # the photo, drawn at its size
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name);")
    assert all(url.startswith(base) or url.startswith("blob:") for url in loaded), loaded  # nothing from outside

    png = browser.get_screenshot_as_png()
    (tmp_path / "page.png").write_bytes(png)
    if os.environ.get("DLDL_SCREENSHOT"):  # keep a copy to look at
        Path(os.environ["DLDL_SCREENSHOT"]).write_bytes(png)
    shot = Image.open(io.BytesIO(png))
    viewport = browser.execute_script("return [innerWidth * devicePixelRatio, innerHeight * devicePixelRatio];")
    assert shot.format == "PNG" and list(shot.size) == [round(v) for v in viewport]
    pixels = np.asarray(shot.convert("RGB").resize((64, 64))).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 100  # the photo, not a blank page

    # changing the task re-runs the photo on show
    from selenium.webdriver.support.ui import Select

    assert settle(browser, lambda: Select(browser.find_element(By.ID, "task")).select_by_value("beauty")) == "done"
    beauty = [float(e.text) for e in browser.find_elements(By.CSS_SELECTOR, ".face-beauty")]
    percentiles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".face-percentile")]
    assert len(percentiles) == len(beauty) and all(p.startswith("above ") and p.endswith("% of training faces") for p in percentiles)
    api_beauty = server_load.send(server, server_load.Upload("valid", PHOTO.name, PHOTO.read_bytes()), task="beauty")["json"]
    assert beauty == pytest.approx([face["beauty"] for face in api_beauty["faces"]], abs=0.1)
    assert not browser.find_elements(By.CSS_SELECTOR, ".face-age")
    Select(browser.find_element(By.ID, "task")).select_by_value("age")

    # a sample photo, a dropped file and a pasted image
    assert settle(browser, lambda: browser.find_element(By.ID, "sample").click()) == "done"
    assert browser.find_elements(By.CSS_SELECTOR, ".face-age")
    for kind, shown_name in (("drop", PHOTO.name), ("paste", "pasted.jpeg")):  # a pasted image has no file name
        state = settle(browser, lambda kind=kind: browser.execute_async_script(GIVE_PHOTO_JS, kind, PHOTO.name))
        assert state == "done" and shown_name in browser.find_element(By.ID, "status").text, kind
        assert len(browser.find_elements(By.CSS_SELECTOR, ".face-age")) == 2

    # an error clears the previous result
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"these are not pixels" * 10)
    assert upload(browser, bad) == "error"
    message = browser.find_element(By.ID, "error").text
    assert message.startswith("notes.jpg: ") and "not a readable image" in message
    assert not browser.find_element(By.ID, "results").is_displayed() and not browser.find_elements(By.CSS_SELECTOR, "tr.face")
    assert not browser.find_element(By.ID, "canvas").is_displayed()


def test_one_task_served_shows_no_task_choice(age_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"http://127.0.0.1:{age_server}/")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#task option"))
    assert not browser.find_element(By.ID, "task-label").is_displayed()
    assert upload(browser, PHOTO) == "done" and len(browser.find_elements(By.CSS_SELECTOR, ".face-age")) == 2
