"""The explorer page in a real headless browser on a live network (issue 15 item 4).

Figure 8 runs through the gateway of real node processes; then Debian's `chromium`, driven by
Selenium through Debian's `chromium-driver` (the same source package, so driver and browser
always match; `make browser` installs both when missing), opens the URL `dltmw explorer NET`
prints, clicks the newest block and must find Figure 8's three transactions with their codes —
VALID, VALID, MVCC_READ_CONFLICT — in the rendered page. A screenshot is kept as a test
artifact (`test-artifacts/`, ignored by git; its path is printed). Then one more transaction is
committed and the page must show its block without being reloaded (live updates). Bad API
requests over the real endpoint are 4xx with a JSON error.

Waits are deadlines (WebDriverWait), never sleeps. The browser calls block, so they run on a
worker thread while no client of the test is open.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dltmw.client import GatewayClient
from dltmw.runtime.metrics import validation_code_name as code_name

from .figure8 import CODES, open_accounts, run_steps
from .operations_http import get

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("DLTMW_ARTIFACTS", ROOT / "test-artifacts"))
DLTMW = Path(sys.executable).parent / "dltmw"
WAIT_S = 30


def chromium() -> webdriver.Chrome:
    """Headless Debian chromium through Debian's chromedriver (no Selenium Manager download)."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver, "chromium and chromium-driver missing: run `make browser`"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    return webdriver.Chrome(options=options, service=Service(driver))


def explorer_url(net: Path) -> str:
    """The URL `dltmw explorer NET --json` prints (the CLI as a user runs it)."""
    done = subprocess.run(
        [str(DLTMW), "explorer", str(net), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(done.stdout)
    assert found["node"] == "peer0.org1"  # the first peer of the topology
    return str(found["url"])


def codes_on_page(driver: webdriver.Chrome, url: str, block: int, tx_ids: list[str]) -> list[str]:
    """Open the explorer, click block `block` in the list, read the code of each tx."""
    driver.get(url)
    wait = WebDriverWait(driver, WAIT_S)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#blocks tr[data-block="{block}"]'))
    driver.find_element(By.CSS_SELECTOR, f'#blocks tr[data-block="{block}"]').click()
    rows = [f'#txs tr[data-tx-id="{t}"] td.code' for t in tx_ids]
    wait.until(lambda d: all(d.find_elements(By.CSS_SELECTOR, r) for r in rows))
    return [driver.find_element(By.CSS_SELECTOR, r).text for r in rows]


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.set_window_size(
        1400, max(1000, int(driver.execute_script("return document.body.scrollHeight")))
    )
    assert driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"explorer screenshot: {path}")
    return path


def wait_for_block_row(driver: webdriver.Chrome, block: int) -> None:
    """The list shows `block` without a reload (the page polls the node)."""
    selector = f'#blocks tr[data-block="{block}"]'
    WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, selector))


async def test_explorer_shows_figure8_codes_and_new_blocks_live(network) -> None:
    net, _ = network(batch_ms=1000, by_limits_only=True)  # Figure 8 needs one block
    async with await GatewayClient.connect(net, "user1.org1") as c:
        await open_accounts(c)
        done = await run_steps(c)
    assert [s.result for _, s in done] == CODES
    block = done[0][1].block_number
    tx_ids = [t for t, _ in done]
    url = explorer_url(net)
    base = url.removesuffix("/explorer/").removeprefix("http://")
    for bad, status in (("blocks?limit=1000", 400), ("txs/" + "0" * 64, 404), ("blocks/x", 400)):
        answer = await asyncio.to_thread(get, base, f"/api/channels/trades/{bad}")
        assert answer[0] == status and json.loads(answer[1])["error"], (bad, answer)
    driver = await asyncio.to_thread(chromium)
    try:
        shown = await asyncio.to_thread(codes_on_page, driver, url, block, tx_ids)
        assert shown == [code_name(c) for c in CODES] == ["VALID", "VALID", "MVCC_READ_CONFLICT"]
        page = driver.find_element(By.ID, "detail").text
        assert "bank.payment(A, C, 3000)" in page
        assert "Orderer signatures (1)" in page
        await asyncio.to_thread(screenshot, driver, "explorer-figure8.png")
        async with await GatewayClient.connect(net, "user1.org1") as c:
            more = await c.submit_transaction("trades", "kv", "put", "k", "v")
        await asyncio.to_thread(wait_for_block_row, driver, more.status.block_number)
    finally:
        await asyncio.to_thread(driver.quit)
