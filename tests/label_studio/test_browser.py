"""A person labels in Label Studio's web page (headless Chromium) and skal
decides what the page shows next.

Debian's Chromium (/usr/bin/chromium) is driven through Playwright; no
browser is downloaded. Screenshots go to the test's temporary folder, or to
the folder named by SKAL_SCREENSHOTS (``SKAL_SCREENSHOTS=docs/images make
test-label-studio`` renews the docs page's pictures).
"""

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.label_studio

CHROMIUM = Path("/usr/bin/chromium")


def test_label_in_the_browser(label_studio, backend_factory, tmp_path):
    shots = Path(os.environ.get("SKAL_SCREENSHOTS") or tmp_path)
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    ls = label_studio
    project, tasks = ls.new_project("browser")
    # train after every second answer: the page's next task is then served
    # from the ranking the first answer left (no training in between), so
    # what it shows next is exactly skal's next pick
    backend = backend_factory(project, n=10, extra=["--train-every", "2"])
    before = backend.start()
    first, second = before["pushed"][:2]
    responses = []

    def served():
        # the label stream asks Label Studio's Data Manager for its next
        # task (POST /api/dm/actions?id=next_task)
        return [
            json.loads(r.body())["data"]["pool_index"]
            for r in responses
            if "id=next_task" in r.url and r.ok
        ]

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("response", lambda response: responses.append(response))
        page.goto(ls.url + "/user/login/")
        page.fill("input[name=email]", ls.local.username)
        page.fill("input[name=password]", ls.local.password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/user/login" not in url)
        # the label stream ("Label All Tasks")
        page.goto(f"{ls.url}/projects/{project}/data?labeling=1")
        page.wait_for_selector("input.ant-checkbox-input", timeout=60_000)
        page.wait_for_selector(".lsf-main-view img, canvas, img", timeout=60_000)
        assert served() == [first]  # the page shows skal's top pick
        label = str(ls.labels[first])
        choice = f"input.ant-checkbox-input[name='{label}']"
        if not page.is_checked(choice):  # not pre-selected by a prediction
            page.click(choice)
        assert page.is_checked(choice)
        page.screenshot(path=str(shots / "label_studio_stream.png"))
        page.click("button:has-text('Submit')")
        for _ in range(300):
            if len(served()) >= 2:
                break
            page.wait_for_timeout(200)
        backend.wait(lambda s: s["labels"].get(str(first)) == int(label), labels=True)
        page.wait_for_selector("input.ant-checkbox-input", timeout=60_000)
        # the next image served is skal's next pick
        assert served() == [first, second]
        page.screenshot(path=str(shots / "label_studio_next.png"))
        browser.close()
    state = backend.status(labels=True)
    assert state["labels"] == {str(first): int(label)}
    assert (
        state["timings"][str(first)]["recorded"]
        >= (state["timings"][str(first)]["received"])
    )
