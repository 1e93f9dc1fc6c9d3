"""The console in a real browser (Debian's headless chromium, driven by Selenium through the system
chromedriver) against real services on models trained in this test session, with bearer tokens on:
the models table, a digit drawn with the mouse, a translation, a stream stopped, an analogy and a
projection, the live figures. Screenshots go to the test's directory (docs/images has copies)."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from harness.http import http_request
from harness.servers import (
    BIN,
    ENDLESS_TOKENS,
    LONG_GENERATION,
    ServerThread,
    sample,
    settings_for,
    wait_cancelled_and_still,
)
from myelin_client import Client

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "console-token-4d2a9b17"
GRU = "generator-gru-shakespeare"
TRANSLATOR = "translator-tatoeba"
EMBEDDER = "word2vec-skipgram"
SCREENSHOTS = os.environ.get("MYELIN_CONSOLE_SCREENSHOTS")  # a folder to copy the screenshots to, when set


@dataclass
class Stack:
    url: str
    servers: dict[str, ServerThread]
    shots: Path


class ConsoleProcess:
    """`myelin-console` as a child process on 127.0.0.1, port 0."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        port_file = tmp / f"console-{time.monotonic_ns()}.port"
        self.log_path = tmp / f"console-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MYELIN_CONSOLE_")}
        self.process = subprocess.Popen(
            [str(BIN / "myelin-console"), "--port", "0", "--port-file", str(port_file)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**clean, "MYELIN_CONSOLE_HOST": "127.0.0.1", **env},
        )
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert self.process.poll() is None and time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{json.loads(port_file.read_text())['port']}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self._log.close()


def console_env(servers: dict[str, ServerThread], **extra: str) -> dict[str, str]:
    urls = {f"MYELIN_CONSOLE_{family.upper()}_URL": server.http_url for family, server in servers.items()}
    return {**urls, "MYELIN_CONSOLE_AUTH_TOKEN": TOKEN, "MYELIN_CONSOLE_SCRAPE_INTERVAL_S": "1", **extra}


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    classifier_repository: Path,
    translator_repository: Path,
    generator_repository: Path,
    word2vec_repository: Path,
) -> Iterator[Stack]:
    """The four services (tokens required) and the console in front of them. The classifier's
    repository has a broken mnist-mlp version 2, so the table shows a failed version and why."""
    tmp = tmp_path_factory.mktemp("console")
    classifiers = tmp / "classifier-repository"
    shutil.copytree(classifier_repository, classifiers)
    shutil.copytree(classifiers / "mnist-mlp" / "1", classifiers / "mnist-mlp" / "2")
    manifest = classifiers / "mnist-mlp" / "2" / "model.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"version": 2}))
    (classifiers / "mnist-mlp" / "2" / "model.onnx").write_bytes(b"not an onnx graph")
    repositories = {
        "classifier": classifiers,
        "translator": translator_repository,
        "generator": generator_repository,
        "embedder": word2vec_repository,
    }
    servers: dict[str, ServerThread] = {}
    try:
        for family, repository in repositories.items():
            extra: dict[str, Any] = {"generation": LONG_GENERATION} if family == "generator" else {}
            settings = settings_for(repository, service=family, http_port=0, auth_tokens=[TOKEN], **extra)
            servers[family] = ServerThread(settings).start()
        console = ConsoleProcess(tmp, console_env(servers, MYELIN_CONSOLE_REPOSITORY=str(classifiers)))
        try:
            yield Stack(console.url, servers, tmp)
        finally:
            console.stop()
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (CHROMEDRIVER.exists() and CHROMIUM.exists()):
        pytest.fail("chromium and chromium-driver are missing: `make deploy-tools` installs them (Debian packages)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1200", "--disable-extensions", "--no-first-run"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def open_console(driver: WebDriver, stack: Stack, tab: str) -> None:
    driver.get(stack.url)
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    driver.find_element(By.CSS_SELECTOR, f'#tabs button[data-tab="{tab}"]').click()


def screenshot(driver: WebDriver, stack: Stack, name: str) -> None:
    path = stack.shots / f"console-{name}.png"
    assert driver.save_screenshot(str(path)), path
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SCREENSHOTS) / path.name)


def fill(element: WebElement, text: str) -> None:
    element.clear()
    element.send_keys(text)


def test_the_models_table_shows_every_version_its_state_figures_and_curves(browser: WebDriver, stack: Stack) -> None:
    open_console(browser, stack, "models")
    rows = {
        (row.get_attribute("data-model"), row.get_attribute("data-version")): row
        for row in browser.find_elements(By.CSS_SELECTOR, "#models-table tbody tr[data-model]")
    }
    expected = {("mnist-mlp", "1"), ("mnist-mlp", "2"), ("mnist-cnn", "1"), (TRANSLATOR, "1"),
                ("generator-gpt-shakespeare", "1"), (GRU, "1"), (EMBEDDER, "1"), ("word2vec-cbow-hs", "1")}  # fmt: skip
    assert expected <= set(rows)
    failed = rows[("mnist-mlp", "2")].find_element(By.CSS_SELECTOR, ".state")
    assert failed.text.startswith("FAILED") and "model.onnx" in failed.find_element(By.CSS_SELECTOR, ".reason").text
    cnn = rows[("mnist-cnn", "1")]
    assert cnn.find_element(By.CSS_SELECTOR, ".state").text == "READY"
    manifest = json.loads((stack.servers["classifier"].settings.repository / "mnist-cnn/1/model.json").read_text())
    accuracy = manifest["evaluation"]["test_accuracy"]
    assert f"test_accuracy: {accuracy:.4}" in cnn.find_element(By.CSS_SELECTOR, ".evaluation").text
    assert "bleu" in rows[(TRANSLATOR, "1")].find_element(By.CSS_SELECTOR, ".evaluation").text.lower()
    wait(browser, lambda d: cnn.find_elements(By.CSS_SELECTOR, ".curves canvas"))  # the repository's metrics.jsonl
    screenshot(browser, stack, "models")


def draw(driver: WebDriver, canvas: WebElement, strokes: list[list[tuple[int, int]]]) -> None:
    """Mouse strokes on `canvas`, in its 280x280 coordinates (offsets from its centre for Selenium)."""
    for stroke in strokes:
        actions = ActionChains(driver, duration=10)
        x0, y0 = stroke[0]
        actions.move_to_element_with_offset(canvas, x0 - 140, y0 - 140).click_and_hold()
        for (xa, ya), (xb, yb) in itertools.pairwise(stroke):
            actions.move_by_offset(xb - xa, yb - ya)
        actions.release().perform()


def test_a_digit_drawn_with_the_mouse_is_classified_by_both_models(browser: WebDriver, stack: Stack) -> None:
    open_console(browser, stack, "digits")
    canvas = browser.find_element(By.ID, "digit-canvas")
    seven = [[(80, 70), (120, 70), (160, 70), (200, 70)], [(200, 70), (180, 120), (160, 170), (140, 220)]]
    draw(browser, canvas, seven)
    for model in ("mnist-mlp", "mnist-cnn"):
        wait(browser, lambda d, m=model: d.find_elements(By.CSS_SELECTOR, f"#digit-{m} .bar-row"))
    pixels = wait(browser, lambda d: canvas.get_attribute("data-pixels"))
    # What the page sent is what gRPC answers; the label shown is that answer's best label.
    image = np.frombuffer(base64.b64decode(pixels), dtype=np.uint8).reshape(28, 28)
    assert image.max() > 200 and (image > 0).sum() > 30  # ink, not an empty canvas
    with Client(stack.servers["classifier"].target, timeout=30, token=TOKEN) as client:
        for model in ("mnist-mlp", "mnist-cnn"):
            label = client.classify(image, model=model, top_k=10).labels[0]
            wait(
                browser,
                lambda d, m=model, want=label: d.find_element(By.ID, f"digit-{m}").get_attribute("data-label") == want,
            )
            bars = browser.execute_script(
                f"return [...document.querySelectorAll('#digit-{model} .bar-row .digit')].map(e => e.textContent)"
            )
            assert bars == [str(d) for d in range(10)]
    screenshot(browser, stack, "digits")


def test_translation_greedy_and_beam(browser: WebDriver, stack: Stack) -> None:
    open_console(browser, stack, "translate")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#translate-model option[value="{TRANSLATOR}"]'))
    fill(browser.find_element(By.ID, "translate-input"), "i am happy .")
    with Client(stack.servers["translator"].target, timeout=60, token=TOKEN) as client:
        greedy = client.translate("i am happy .", model=TRANSLATOR, beam_size=1, beams=True)[0]
        beam = client.translate("i am happy .", model=TRANSLATOR, beam_size=4, beams=True)[0]
    # One row per hypothesis: greedy's one, then every beam, best first, the first being the translation.
    expected = [("greedy", h) for h in greedy.beams] + [("beam 4", h) for h in beam.beams]
    assert len(greedy.beams) == 1 and len(beam.beams) > 1
    assert (greedy.beams[0].text, beam.beams[0].text) == (greedy.text, beam.text)
    browser.find_element(By.ID, "translate-go").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#translate-results tbody tr")) == len(expected))
    rows = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in
            browser.find_elements(By.CSS_SELECTOR, "#translate-results tbody tr")]  # fmt: skip
    ranks = [1, *range(1, len(beam.beams) + 1)]
    for (search, rank, french, score, log_probability), (name, hypothesis), number in zip(
        rows, expected, ranks, strict=True
    ):
        unfinished = "" if hypothesis.finished else " (max length)"
        assert (search, int(rank), french) == (name, number, (hypothesis.text + unfinished).strip())
        assert float(score) == pytest.approx(hypothesis.score, rel=1e-3)
        assert float(log_probability) == pytest.approx(hypothesis.log_probability, rel=1e-3)
    screenshot(browser, stack, "translation")


def generated(driver: WebDriver) -> tuple[str, int, str]:
    output = driver.find_element(By.ID, "generate-output")
    text = output.get_property("textContent")
    return str(text), int(output.get_attribute("data-tokens") or 0), output.get_attribute("data-state") or ""


def test_generation_streams_token_by_token_and_stop_cancels_it(browser: WebDriver, stack: Stack) -> None:
    server = stack.servers["generator"]
    open_console(browser, stack, "generate")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#generate-model option[value="{GRU}"]'))
    browser.find_element(By.CSS_SELECTOR, f'#generate-model option[value="{GRU}"]').click()
    # The controls reach the service: a seeded generation equals gRPC's.
    for field, value in (("generate-max", "40"), ("generate-temperature", "0.9"), ("generate-top-k", "20"),
                         ("generate-top-p", "0.95"), ("generate-penalty", "1.2"), ("generate-seed", "7")):  # fmt: skip
        fill(browser.find_element(By.ID, field), value)
    browser.find_element(By.ID, "generate-go").click()
    wait(browser, lambda d: generated(d)[2] == "finished")
    with Client(server.target, timeout=60, token=TOKEN) as client:
        expected = client.complete("ROMEO:", model=GRU, max_new_tokens=40, temperature=0.9, top_k=20, top_p=0.95,
                                   repetition_penalty=1.2, seed=7)  # fmt: skip
    assert generated(browser)[:2] == (expected.text, 40)
    assert "finished (length): 40 tokens" in browser.find_element(By.ID, "generate-status").text

    before = sample(server, "myelin_generator_sequences_total", {"model": GRU, "outcome": "cancelled"})
    fill(browser.find_element(By.ID, "generate-max"), str(ENDLESS_TOKENS))
    fill(browser.find_element(By.ID, "generate-seed"), "")
    browser.find_element(By.ID, "generate-go").click()
    first = wait(browser, lambda d: generated(d)[1] >= 20 and generated(d)[1])
    wait(browser, lambda d: generated(d)[1] > first)  # still coming in
    screenshot(browser, stack, "generation")
    browser.find_element(By.ID, "generate-stop-button").click()
    wait(browser, lambda d: generated(d)[2] == "stopped")
    assert browser.find_element(By.ID, "generate-status").text.startswith("stopped after")
    # Stopping in the browser cancelled the sequence in the service, through the console.
    wait_cancelled_and_still(server, GRU, before)
    stopped_at = generated(browser)[1]
    time.sleep(0.5)
    assert generated(browser)[1] == stopped_at


def test_word_vectors_analogy_neighbours_odd_one_out_and_projection(browser: WebDriver, stack: Stack) -> None:
    open_console(browser, stack, "words")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#words-model option[value="{EMBEDDER}"]'))
    browser.find_element(By.CSS_SELECTOR, f'#words-model option[value="{EMBEDDER}"]').click()
    # Words of the dry-run model's 3,757-word vocabulary.
    fill(browser.find_element(By.ID, "analogy-c"), "boy")
    fill(browser.find_element(By.ID, "odd-words"), "father son daughter red")
    fill(browser.find_element(By.ID, "pca-words"), "king queen man boy girl father son daughter red blue zyzzyva")
    with Client(stack.servers["embedder"].target, timeout=30, token=TOKEN) as client:
        expected = client.analogy("man", "king", "boy", model=EMBEDDER, top_k=5)
        odd = client.doesnt_match(["father", "son", "daughter", "red"], model=EMBEDDER).word
    browser.find_element(By.ID, "analogy-go").click()
    answers = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#analogy-results li[data-word]"))
    assert [a.get_attribute("data-word") for a in answers] == [c.word for c in expected.candidates]
    browser.find_element(By.ID, "neighbours-go").click()
    assert len(wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#neighbours-results li"))) == 10
    browser.find_element(By.ID, "odd-go").click()
    wait(browser, lambda d: d.find_element(By.ID, "odd-result").text == odd)
    browser.find_element(By.ID, "pca-go").click()
    points = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#pca-plot g.point"))
    assert {p.get_attribute("data-word") for p in points} == {"king", "queen", "man", "boy", "girl", "father", "son",
                                                              "daughter", "red", "blue"}  # fmt: skip
    assert "zyzzyva" in browser.find_element(By.ID, "pca-status").text  # not in the vocabulary, and said so
    screenshot(browser, stack, "words")


def test_live_figures_from_the_services_metrics(browser: WebDriver, stack: Stack) -> None:
    with Client(stack.servers["classifier"].target, timeout=30, token=TOKEN) as client:
        for _ in range(20):
            client.classify(np.zeros((28, 28), np.uint8), model="mnist-cnn")
    open_console(browser, stack, "live")
    section = '#live-figures .live-family[data-family="classifier"]'
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"{section} canvas"))
    titles = [t.text for t in browser.find_elements(By.CSS_SELECTOR, f"{section} .chart .title")]
    assert {"mnist-cnn: executions/s", "mnist-cnn: inference latency (ms)", "mnist-cnn: batch size"} <= set(titles)
    live = json.loads(http_request(f"{stack.url}/api/live").body)
    points = live["families"]["classifier"]["points"]
    assert any((p["models"].get("mnist-cnn") or {}).get("rate", 0) > 0 for p in points)
    screenshot(browser, stack, "live")


def test_the_console_keeps_the_token_sets_a_strict_csp_and_bounds_bodies(stack: Stack) -> None:
    page = http_request(stack.url)
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for path in ("/", "/static/console.js", "/api/families", "/api/live"):
        assert TOKEN not in http_request(f"{stack.url}{path}").body.decode(), path
    models = http_request(f"{stack.url}/api/classifier/rpc/myelin_api.v1.Models/ListModels", "POST", b"{}")
    assert models.status == 200 and TOKEN not in models.body.decode()  # forwarded with the token
    big = http_request(f"{stack.url}/api/classifier/rpc/myelin_api.v1.Classifier/Classify", "POST",
                       b"{" + b" " * (2 * 1024 * 1024) + b"}", {"Content-Type": "application/json"})  # fmt: skip
    assert big.status == 413 and "at most" in big.json()["error"]
    # Model output is rendered as text only: the page's script never writes HTML.
    script = (Path(__file__).parents[2] / "console/src/myelin_console/static/console.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script


def test_a_family_not_deployed_says_so(browser: WebDriver, stack: Stack) -> None:
    console = ConsoleProcess(stack.shots, console_env({"classifier": stack.servers["classifier"]}))
    try:
        families = json.loads(http_request(f"{console.url}/api/families").body)
        assert families["classifier"]["ready"] and not families["translator"]["deployed"]
        missing = http_request(f"{console.url}/api/translator/rpc/myelin_api.v1.Translator/Translate", "POST", b"{}")
        assert missing.status == 404 and "MYELIN_CONSOLE_TRANSLATOR_URL" in missing.json()["error"]
        open_console(browser, Stack(console.url, stack.servers, stack.shots), "translate")
        notice = browser.find_element(By.CSS_SELECTOR, "#tab-translate .unavailable").text
        assert "not deployed here" in notice and "MYELIN_CONSOLE_TRANSLATOR_URL" in notice
        assert not browser.find_element(By.ID, "translate-go").is_displayed()
    finally:
        console.stop()
