"""The demo page in a real headless browser (Debian's chromium + chromium-driver, driven by Selenium):
type a prompt, click Generate, and a playable mp4 appears in the page."""

import contextlib
import shutil

import pytest

pytest.importorskip("fastapi")
selenium = pytest.importorskip("selenium")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from pipelines import VideoPipeline  # noqa: E402
from pipelines.video import DEFAULT_MODEL_DIR  # noqa: E402
from tests.helpers.live_server import live_server  # noqa: E402
from videoserve.app import create_app  # noqa: E402
from videoserve.store import OutputStore  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture()
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900",
                 "--autoplay-policy=no-user-gesture-required"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@contextlib.contextmanager
def demo_page(browser, tmp_path, timeout: float):
    """The shipped model's demo server, live, with ``browser`` on its page once /api/health has answered; yields a
    wait of ``timeout`` seconds."""
    pipe = VideoPipeline.from_pretrained(DEFAULT_MODEL_DIR)
    store = OutputStore(tmp_path / "out", max_bytes=10**9)
    with live_server(create_app(pipe, store, model_name="shapes")) as url:
        browser.get(url)
        wait = WebDriverWait(browser, timeout)
        wait.until(lambda d: d.find_element(By.ID, "mode").get_attribute("value"))  # health loaded
        yield wait


def test_type_a_prompt_click_generate_and_a_playable_video_appears(browser, tmp_path):
    with demo_page(browser, tmp_path, 120) as wait:
        # a typed temperature also applies after context (the API's rule): the second box says so
        temperature, after = browser.find_element(By.ID, "temperature"), browser.find_element(By.ID, "ctxtemp")
        defaults = (temperature.get_attribute("placeholder"), after.get_attribute("placeholder"))
        temperature.send_keys("0.9")
        typed = after.get_attribute("placeholder")
        temperature.send_keys(Keys.BACKSPACE * 3)
        assert (defaults, typed, after.get_attribute("placeholder")) == (("0.7", "0.3"), "0.9", "0.3")
        # an order with its own settings (pipeline.yaml's maskgit/clip) shows them once chosen
        Select(browser.find_element(By.ID, "mode")).select_by_value("maskgit")
        shown = {}
        choice, after_choice = browser.find_element(By.ID, "choice"), browser.find_element(By.ID, "ctxchoice")
        for order in ("frame", "clip"):
            Select(browser.find_element(By.ID, "order")).select_by_value(order)
            shown[order] = [box.get_attribute("placeholder") for box in (temperature, choice, after_choice)]
        assert shown == {"frame": ["0.8", "4.5", "1"], "clip": ["0.5", "4.5", "4.5"]}
        choice.send_keys("2")  # MaskGIT's choice noise, typed alone, applies after context too
        assert after_choice.get_attribute("placeholder") == "2" and choice.is_displayed()
        choice.send_keys(Keys.BACKSPACE)
        Select(browser.find_element(By.ID, "mode")).select_by_value("ar")
        assert not choice.is_displayed()  # GPT-style decoding has no choice noise: the server would refuse it
        box = browser.find_element(By.ID, "prompt")
        box.clear()
        box.send_keys("a green square moving down")
        seed = browser.find_element(By.ID, "seed")
        seed.clear()
        seed.send_keys("7")
        browser.find_element(By.ID, "generate").click()
        wait.until(
            lambda d: (
                "done in" in d.find_element(By.ID, "status").text
                or "error" in (d.find_element(By.ID, "status").get_attribute("class") or "")
            )
        )
        assert "done in" in browser.find_element(By.ID, "status").text, browser.find_element(By.ID, "status").text
        # Playable: the browser decoded the mp4's metadata and frames (readyState >= HAVE_CURRENT_DATA).
        video = "document.getElementById('video')"
        wait.until(lambda d: d.execute_script(f"return {video}.readyState") >= 2)
        duration = browser.execute_script(f"return {video}.duration")
        size = browser.execute_script(f"return [{video}.videoWidth, {video}.videoHeight];")
        src = browser.execute_script(f"return {video}.currentSrc")
        wait.until(lambda d: d.execute_script("return document.getElementById('sheet').naturalWidth") > 0)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery figure"))
        captions = [f.text for f in browser.find_elements(By.CSS_SELECTOR, "#gallery figcaption")]
        details = browser.find_element(By.ID, "details").text
        shot = tmp_path / "page.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
    assert abs(duration - 17 / 8) < 0.2 and size == [64, 64]
    assert src.endswith(".mp4") and "/outputs/" in src
    assert captions == ["a green square moving down"]
    assert "seed 7 ·" in details and "ar/frame" in details


def test_an_animated_gif_is_continued_as_a_video_and_a_class_replaces_the_prompt(browser, tmp_path):
    """The page sent every image/* upload as an image, so an animated GIF always failed ("image must be one frame");
    it had no class field, so a class-conditional model could not be used from it."""
    import json

    from PIL import Image

    from videoeval.conditioning import fresh_clips

    frames = fresh_clips(1)[0][1][:9]  # (9, 64, 64, 3): a red circle moving
    gif = tmp_path / "clip.gif"
    images = [Image.fromarray(f) for f in frames]
    images[0].save(gif, save_all=True, append_images=images[1:], duration=125, loop=0)
    with demo_page(browser, tmp_path, 300) as wait:
        wait.until(lambda d: len(Select(d.find_element(By.ID, "label")).options) == 73)  # none + 72 classes
        Select(browser.find_element(By.ID, "label")).select_by_value("1")
        assert not browser.find_element(By.ID, "prompt").is_enabled()  # the class replaces it
        browser.find_element(By.ID, "upload").send_keys(str(gif))
        context = browser.find_element(By.ID, "context")
        context.clear()
        context.send_keys("5")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda d: "done in" in d.find_element(By.ID, "status").text
                   or "error" in (d.find_element(By.ID, "status").get_attribute("class") or ""))  # fmt: skip
        status = browser.find_element(By.ID, "status").text
        details = browser.find_element(By.ID, "details").text
    assert "done in" in status, status
    assert details.startswith("class 1 ·"), details
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert record["context"] == "video" and record["label"] == 1 and record["prompt"] == []


def test_a_seed_beyond_two_to_the_53_reaches_the_server_and_the_page_exactly(browser, tmp_path):
    """The page sent Number(seed): 2**53 + 1 arrived as 2**53, another video than the seed typed, and a long seed
    read back from the server was shown rounded."""
    import json

    seed = 2**53 + 1
    with demo_page(browser, tmp_path, 120) as wait:
        box = browser.find_element(By.ID, "seed")
        box.clear()
        box.send_keys(str(seed))
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda d: "done in" in d.find_element(By.ID, "status").text
                   or "error" in (d.find_element(By.ID, "status").get_attribute("class") or ""))  # fmt: skip
        status = browser.find_element(By.ID, "status").text
        details = browser.find_element(By.ID, "details").text
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery figure"))
        browser.find_element(By.CSS_SELECTOR, "#gallery figure").click()  # shown again from /api/recent
        again = browser.find_element(By.ID, "details").text
    assert "done in" in status, status
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert record["seed"] == seed
    assert f"seed {seed} ·" in details and f"seed {seed} ·" in again


def test_the_choice_noise_typed_for_maskgit_reaches_the_server(browser, tmp_path):
    """The page had no control for MaskGIT's choice noise, which the API takes as choice_temperature and
    context_choice_temperature."""
    import json

    with demo_page(browser, tmp_path, 120) as wait:
        Select(browser.find_element(By.ID, "mode")).select_by_value("maskgit")
        browser.find_element(By.ID, "choice").send_keys("2")
        browser.find_element(By.ID, "ctxchoice").send_keys("0.5")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda d: "done in" in d.find_element(By.ID, "status").text
                   or "error" in (d.find_element(By.ID, "status").get_attribute("class") or ""))  # fmt: skip
        status = browser.find_element(By.ID, "status").text
    assert "done in" in status, status
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert record["mode"] == "maskgit"
    assert (record["sampling"]["choice_temperature"], record["sampling"]["context_choice_temperature"]) == (2, 0.5)
