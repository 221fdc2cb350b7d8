"""The drawing page in headless Chromium: strokes drawn with a mouse and a finger are recognised,
and the page says what the answer says: sure, unsure (under the model's threshold) or no digit.

The server runs a template classifier built offline (no MNIST): Pillow's bundled font renders
each digit, images.to_mnist prepares it like a drawing, and a Gemm scores the unit-normalised
templates against the pixels (cosine similarity, since |x| is the same for every class). It has
no threshold in its metadata, so the service's default (0.5) applies. Handwriting styles MNIST
lacks are drawn against the real exported model, models/digits.onnx, when the recorded run's
files are there (`dvc repro` or `dvc pull`); without it they are skipped.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions import interaction
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.actions.pointer_input import PointerInput
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from digits.images import to_mnist
from digits.ink import BLANK
from tests.serving.conftest import running_server

pytestmark = pytest.mark.e2e

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
MODEL = Path(__file__).resolve().parents[2] / "models" / "digits.onnx"
# Strokes on the 280×280 canvas, in pixels from its top-left corner.
ONE = [(140, 40), (140, 240)]
SEVEN = [(70, 50), (210, 50), (120, 240)]
DASH = [(60, 140), (220, 140)]  # no digit the templates know: the nearest ones are all far


def glyph_templates() -> np.ndarray:
    """(10, 784) unit-norm templates: each digit in Pillow's font, bold and blurred a little."""
    font = ImageFont.load_default(size=200)
    templates = []
    for digit in range(10):
        image = Image.new("L", (280, 280), 0)
        draw = ImageDraw.Draw(image)
        draw.text((140, 140), str(digit), 255, font, anchor="mm", stroke_width=6, stroke_fill=255)
        blurred = Image.fromarray(to_mnist(image)).filter(ImageFilter.GaussianBlur(1))
        templates.append(np.asarray(blurred, np.float32).ravel())
    T = np.stack(templates)
    return T / np.linalg.norm(T, axis=1, keepdims=True)


def write_template_onnx(path: Path) -> Path:
    """A digits.onnx-contract model: logits = 0.01 · pixels @ templatesᵀ."""
    W = (0.01 * glyph_templates().T).astype(np.float32)  # (784, 10)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["pixels", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "digits-templates",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 784])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10]),
        ],
        initializer=[numpy_helper.from_array(W, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {"model_name": "templates", "model_version": "glyphs"}
    helper.set_model_props(model, {**props, "classes": json.dumps(list(range(10)))})
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("page")
    model = write_template_onnx(directory / "templates.onnx")
    with running_server(model, directory / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def real_page_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not MODEL.is_file():
        pytest.skip("needs models/digits.onnx (dvc repro, or dvc pull)")
    with running_server(MODEL, tmp_path_factory.mktemp("real") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (make browser)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    yield driver
    driver.quit()


def open_page(browser: webdriver.Chrome, url: str) -> WebElement:
    """Load the page; return its canvas."""
    browser.get(url)
    return browser.find_element(By.ID, "pad")


def draw_with_mouse(browser: webdriver.Chrome, canvas: WebElement, points: list) -> None:
    """One mouse stroke through the points (canvas pixels), in small steps."""
    x0, y0 = points[0]
    actions = ActionChains(browser).move_to_element_with_offset(canvas, x0 - 140, y0 - 140)
    actions.click_and_hold()
    for (xa, ya), (xb, yb) in zip(points, points[1:], strict=False):
        for _ in range(10):
            actions.move_by_offset(round((xb - xa) / 10), round((yb - ya) / 10))
    actions.release().perform()


def draw_with_finger(browser: webdriver.Chrome, canvas: WebElement, points: list) -> None:
    """One touch stroke through the points (canvas pixels)."""
    finger = PointerInput(interaction.POINTER_TOUCH, "finger")
    actions = ActionBuilder(browser, mouse=finger)
    box = canvas.rect
    x0, y0 = points[0]
    actions.pointer_action.move_to_location(int(box["x"] + x0), int(box["y"] + y0)).pointer_down()
    for x, y in points[1:]:
        actions.pointer_action.move_to_location(int(box["x"] + x), int(box["y"] + y))
    actions.pointer_action.pointer_up()
    actions.perform()


def predicted(browser: webdriver.Chrome) -> str:
    """The digit the page shows once its prediction has arrived."""
    element = browser.find_element(By.ID, "prediction")
    WebDriverWait(browser, 15).until(lambda _: element.get_attribute("data-digit") != "")
    return element.text


@pytest.mark.parametrize(("points", "digit"), [(ONE, "1"), (SEVEN, "7")])
def test_mouse_drawing_is_recognised(
    browser: webdriver.Chrome, page_url: str, points: list, digit: str
) -> None:
    canvas = open_page(browser, page_url)
    draw_with_mouse(browser, canvas, points)
    assert predicted(browser) == digit
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert len(bars) == 10
    widths = [bar.find_elements(By.TAG_NAME, "span")[1].size["width"] for bar in bars]
    assert int(np.argmax(widths)) == int(digit)


def test_touch_drawing_is_recognised(browser: webdriver.Chrome, page_url: str) -> None:
    canvas = open_page(browser, page_url)
    draw_with_finger(browser, canvas, SEVEN)
    assert predicted(browser) == "7"


def test_clear_button_resets(browser: webdriver.Chrome, page_url: str) -> None:
    canvas = open_page(browser, page_url)
    draw_with_mouse(browser, canvas, ONE)
    assert predicted(browser) == "1"
    browser.find_element(By.ID, "clear").click()
    assert browser.find_element(By.ID, "prediction").text == ""
    ink = browser.execute_script(
        "const d = document.getElementById('pad').getContext('2d').getImageData(0, 0, 280, 280);"
        "return d.data.filter((v, i) => i % 4 === 0 && v > 0).length;"
    )
    assert ink == 0


@dataclass(frozen=True)
class Shown:
    """What the page shows for an answer."""

    state: str  # "sure", "unsure" or "no-digit"
    digit: str  # "" when there is no digit
    words: str  # the verdict a person reads
    ranking: str  # the top answers, "" when there is no digit


def shown(browser: webdriver.Chrome) -> Shown:
    """What the page shows once the answer to its newest request has arrived."""

    def answered(_: object) -> bool:
        busy = browser.find_element(By.ID, "result").get_attribute("aria-busy")
        return busy == "false" and browser.find_element(By.ID, "verdict").text != ""

    WebDriverWait(browser, 15).until(answered)
    verdict = browser.find_element(By.ID, "verdict")
    digit = browser.find_element(By.ID, "prediction").get_attribute("data-digit") or ""
    ranking = browser.find_element(By.ID, "ranking").text
    return Shown(verdict.get_attribute("data-state") or "", digit, verdict.text, ranking)


def tap(browser: webdriver.Chrome, canvas: WebElement) -> None:
    """A tap on the pad without moving: the page sends the pad as it is."""
    ActionChains(browser).move_to_element(canvas).click().perform()


def api_answer(browser: webdriver.Chrome, url: str) -> dict:
    """The service's own answer for the pad as the page holds it, asked for over HTTP."""
    data_url = browser.execute_script("return document.getElementById('pad').toDataURL();")
    image = base64.b64decode(data_url.split(",", 1)[1])
    response = httpx.post(f"{url}/predict_image", files=[("images", ("pad.png", image))])
    assert response.status_code == 200, response.text
    return response.json()


def ranked(ranking: str) -> list[tuple[str, float]]:
    """'top answers: 6 (23.1 %), ...' -> [("6", 23.1), ...]."""
    return [(d, float(p)) for d, p in re.findall(r"(\d) \((\d+\.\d) %\)", ranking)]


def test_a_blank_pad_shows_no_digit_and_why(browser: webdriver.Chrome, page_url: str) -> None:
    canvas = open_page(browser, page_url)
    tap(browser, canvas)  # nothing drawn yet
    blank = Shown("no-digit", "", f"no digit: {BLANK}", "")
    assert shown(browser) == blank
    assert browser.find_element(By.ID, "prediction").text == "–"
    assert browser.find_element(By.ID, "error").text == ""  # an answer, not a failure
    draw_with_mouse(browser, canvas, ONE)
    assert shown(browser).digit == "1"
    browser.find_element(By.ID, "clear").click()
    assert browser.find_element(By.ID, "verdict").text == ""
    tap(browser, canvas)  # cleared, then asked again
    assert shown(browser) == blank


def test_an_answer_under_the_threshold_shows_unsure(
    browser: webdriver.Chrome, page_url: str
) -> None:
    canvas = open_page(browser, page_url)
    draw_with_mouse(browser, canvas, DASH)
    page = shown(browser)
    answer = api_answer(browser, page_url)
    assert answer["low_confidence"] == [True]  # the service's own flag, for the same picture
    assert page.state == "unsure" and page.digit == str(answer["digits"][0])
    top = ranked(page.ranking)
    assert page.words == f"unsure: {top[0][1]:.1f} %, under the model's 50.0 % threshold"
    expected = sorted(enumerate(answer["probabilities"][0]), key=lambda dp: -dp[1])[:3]
    assert [d for d, _ in top] == [str(d) for d, _ in expected]
    np.testing.assert_allclose([p for _, p in top], [100 * p for _, p in expected], atol=0.051)
    assert "unsure" in browser.find_element(By.ID, "prediction").get_attribute("class")


def test_a_confident_answer_shows_sure(browser: webdriver.Chrome, page_url: str) -> None:
    canvas = open_page(browser, page_url)
    draw_with_mouse(browser, canvas, SEVEN)
    page = shown(browser)
    assert api_answer(browser, page_url)["low_confidence"] == [False]
    assert page.state == "sure" and page.digit == "7"
    assert page.words == f"sure: {ranked(page.ranking)[0][1]:.1f} %"


class ReadUnsure(AssertionError):
    """The page read the digit drawn, but under the model's threshold: "unsure"."""


# Handwriting styles that MNIST (US Census staff and students) holds few of, stroke by stroke.
EUROPEAN_ONE = [(90, 110), (160, 40), (160, 240)]  # a long flag up to the top, then down
STYLES = [
    pytest.param(
        "1",
        [EUROPEAN_ONE],
        id="European 1, long flag",
        marks=pytest.mark.xfail(
            strict=True,
            raises=ReadUnsure,
            reason="issue #29 (augmentation): read as 1 but under the threshold, 7 close behind",
        ),
    ),
    pytest.param("1", [EUROPEAN_ONE, [(100, 240), (220, 240)]], id="European 1, flag and foot"),
    pytest.param("7", [SEVEN, [(115, 145), (215, 145)]], id="crossed 7"),
    pytest.param("4", [[(170, 40), (60, 170), (225, 170)], [(170, 40), (170, 245)]], id="closed 4"),
]


@pytest.mark.parametrize(("digit", "strokes"), STYLES)
def test_handwriting_styles_read_right_and_sure_with_the_real_model(
    browser: webdriver.Chrome,
    real_page_url: str,
    digit: str,
    strokes: list[list[tuple[int, int]]],
) -> None:
    canvas = open_page(browser, real_page_url)
    for stroke in strokes:
        draw_with_mouse(browser, canvas, stroke)
    page = shown(browser)
    print(f"{page.words}; {page.ranking}")  # what it reads as: pytest -rA shows it
    assert page.digit == digit, page  # a wrong digit is a failure, whatever the marks say
    if page.state != "sure":
        raise ReadUnsure(f"reads as {digit}, but {page.words} ({page.ranking})")
