"""Screenshot of ``affectsr serve`` after a run on the bundled face, driven by headless Chromium -> docs/serve.png.

Also the browser helpers of tests/test_serve.py (one set-up for both). Needs Debian's
``chromium`` and ``chromium-driver`` packages (/usr/bin/chromium, /usr/bin/chromedriver) and
selenium; nothing is fetched from the internet.

Run: python tools/serve_screenshot.py [--out docs/serve.png] [--model affectsr-x4-lite]
"""
from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync")


def browser_missing() -> str | None:
    """Why the browser cannot run here (for pytest.skip), else None."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    return f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)" if missing else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chrome(profile_dir: str | Path, width: int = 1400, height: int = 1000):
    """Headless Chromium with no network side-traffic, its profile in ``profile_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in CHROME_ARGS:
        opts.add_argument(arg)
    opts.add_argument(f"--user-data-dir={profile_dir}")
    opts.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def upscale_in_browser(driver, url: str, image: str | Path | None = None, model: str | None = None,
                       timeout: float = 60.0) -> str:
    """Open the app, upload ``image`` (None: click the bundled example), press Upscale; returns the result's img src.

    Raises selenium's TimeoutException when no result image appears within ``timeout`` seconds.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout)
    driver.get(url)
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#run")))
    if image is None:
        example = wait.until(ec.element_to_be_clickable(
            (By.XPATH, "//*[@id='examples']//*[contains(text(), 'astronaut face')]")))
        example.click()
        expect = "astronaut"
    else:
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(Path(image).resolve()))
        expect = Path(image).stem
    # the upload (or the example's file) must have reached the server before Upscale is pressed
    wait.until(lambda d: expect in d.find_element(By.CSS_SELECTOR, "#upload").text)
    if model is not None:
        box = driver.find_element(By.CSS_SELECTOR, "#model input")
        box.click()
        wait.until(ec.element_to_be_clickable((By.XPATH, f"//ul//li[contains(., '{model}')]"))).click()
    driver.find_element(By.CSS_SELECTOR, "#run").click()

    def result_src(d):
        imgs = d.find_elements(By.CSS_SELECTOR, "#comparison img")
        src = imgs[0].get_attribute("src") if imgs else None
        return src or False

    src = wait.until(result_src)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#emotions img"))  # the bar chart follows in the same update
    return src


def main(argv: list[str] | None = None) -> int:
    from affectsr.serve import ServeConfig, serve

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/serve.png")
    ap.add_argument("--model", default=None, help="pick this model in the menu (default: the app's default)")
    ap.add_argument("--width", type=int, default=1400)
    args = ap.parse_args(argv)
    if (why := browser_missing()) is not None:
        print(f"error: {why}", file=sys.stderr)
        return 2
    port = free_port()
    demo = serve(port, config=ServeConfig(), block=False)
    try:
        with tempfile.TemporaryDirectory() as profile:
            driver = chrome(profile, args.width, 1000)
            try:
                t0 = time.perf_counter()
                upscale_in_browser(driver, f"http://127.0.0.1:{port}/", model=args.model)
                print(f"result after {time.perf_counter() - t0:.1f} s", file=sys.stderr)
                # grow the window until the whole page fits (the window is taller than its viewport)
                for _ in range(3):
                    page, view = driver.execute_script(
                        "return [document.documentElement.scrollHeight, window.innerHeight]")
                    if page <= view:
                        break
                    driver.set_window_size(args.width, min(driver.get_window_size()["height"] + page - view + 16, 4000))
                    time.sleep(0.5)  # let the layout settle after the resize
                out = Path(args.out)
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(f".{out.name}.tmp.png")
                driver.save_screenshot(str(tmp))
                tmp.replace(out)  # atomic: a failed run leaves the old screenshot
                print(f"wrote {out}", file=sys.stderr)
            finally:
                driver.quit()
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
