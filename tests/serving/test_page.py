"""The drawing page in headless Chromium: strokes drawn with a mouse and a finger are recognised.

The server runs a template classifier built offline (no MNIST): Pillow's bundled font renders
each digit, images.to_mnist prepares it like a drawing, and a Gemm scores the unit-normalised
templates against the pixels (cosine similarity, since |x| is the same for every class).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

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
from tests.serving.conftest import running_server

pytestmark = pytest.mark.e2e

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# Strokes on the 280×280 canvas, in pixels from its top-left corner.
ONE = [(140, 40), (140, 240)]
SEVEN = [(70, 50), (210, 50), (120, 240)]


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
