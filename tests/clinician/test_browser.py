"""A clinician in a real headless Chromium (Debian's `chromium`, driven by Playwright): signs in, opens
the panel and a patient, acknowledges an alert; and axe-core finds no critical or serious accessibility
violation on any dashboard page. Screenshots and axe reports go to tests/artifacts/."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from companion.store.relationships import CareTeams
from tests.clinician.conftest import at_day
from tests.support.axe import describe, serious_violations
from tests.support.world import PASSWORD

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.slow


@pytest.fixture
def served(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def busier_panel(world, seed, scripted_a, db):
    """Two more patients on A's team, so the panel has an order to show."""
    teams = CareTeams(db)
    quiet = seed.patient("Rosa Quiet", zone="Europe/Paris")
    teams.enrol(world.team_id, quiet)
    seed.adherence_run(quiet, at_day(1).date(), [True] * 30)
    seed.device(quiet, "CTU-ROSA", last_sync_at=at_day(0, 0))
    struggling = seed.patient("Sam Struggling")
    teams.enrol(world.team_id, struggling)
    seed.adherence_run(struggling, at_day(1).date(), [True] * 20 + [False] * 10)
    seed.pain(struggling, at_day(2), 8)
    seed.pain(struggling, at_day(17), 5)
    seed.device(struggling, "CTU-SAM", last_sync_at=at_day(6, 0))


def test_clinician_signs_in_reviews_a_patient_and_acknowledges_an_alert(served, world, busier_panel):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required: apt-get install -y chromium")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.goto(f"{served}/clinician/")
            assert "/clinician/login" in page.url
            page.fill("input[name=email]", world["clinician_team"].email)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("table.panel")
            names = page.locator("table.panel tbody th a").all_inner_texts()
            assert names == ["Patient A", "Sam Struggling", "Rosa Quiet"]
            page.screenshot(path=str(ARTIFACTS / "panel-laptop.png"), full_page=True)

            page.click("text=Patient A")
            page.wait_for_selector("svg.chart")
            assert page.locator("svg.chart rect[fill='#2f9e77']").count() == 2  # two days with TENS
            assert page.locator("svg.chart circle").count() == 8  # eight pain ratings
            assert page.locator("svg.heatmap rect[data-state=progress]").count() == 29
            page.screenshot(path=str(ARTIFACTS / "patient-laptop.png"), full_page=True)

            assert page.locator("#alerts li").count() == 1
            page.click("#alerts button:has-text('Acknowledge')")
            page.wait_for_selector("#alerts p.empty")
            assert "No open alerts" in page.inner_text("#alerts")
            page.screenshot(path=str(ARTIFACTS / "patient-after-acknowledge.png"), full_page=False)

            page.set_viewport_size({"width": 820, "height": 1180})
            page.reload()
            page.screenshot(path=str(ARTIFACTS / "patient-tablet.png"), full_page=True)
            page.goto(f"{served}/clinician/")
            page.screenshot(path=str(ARTIFACTS / "panel-tablet.png"), full_page=True)
        finally:
            browser.close()


def _sign_in(page, served: str, email: str) -> None:
    page.goto(f"{served}/clinician/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("table.panel")


def test_no_dashboard_page_has_a_critical_or_serious_accessibility_violation(served, world, busier_panel, seed):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required: apt-get install -y chromium")
    seed.pain(world["patient_a"].id, at_day(1, 20), 6, bpi={"worst": 8, "least": 3, "average": 5, "now": 6,
                                                              "interference": {"general_activity": 6, "mood": 5,
                                                                               "sleep": 7, "enjoyment_of_life": 4}})
    ARTIFACTS.mkdir(exist_ok=True)
    a = world["patient_a"].id
    pages = {"login": "/clinician/login", "panel": "/clinician/", "panel-filtered": "/clinician/?sort=pdc_7&order=desc",
             "patient": f"/clinician/patients/{a}", "patient-90-days": f"/clinician/patients/{a}?days=90",
             "not-found": "/clinician/patients/nobody"}
    found = {}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            for name, path in pages.items():
                if name == "panel":
                    _sign_in(page, served, world["clinician_team"].email)
                page.goto(served + path)
                page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
                serious, every = serious_violations(page)
                (ARTIFACTS / f"axe-{name}.json").write_text(json.dumps(every, indent=1))
                found[name] = serious
                if name == "patient":
                    page.screenshot(path=str(ARTIFACTS / "patient-tables-open.png"), full_page=True)
            # A note refused (blank): the page again, the reason tied to the field.
            page.goto(f"{served}/clinician/patients/{a}")
            page.fill("textarea[name=text]", "   ")
            page.click("button:has-text('Save note')")
            page.wait_for_selector("#note-error")
            found["note-refused"], every = serious_violations(page)
            (ARTIFACTS / "axe-note-refused.json").write_text(json.dumps(every, indent=1))
        finally:
            browser.close()
    assert {name: describe(v) for name, v in found.items() if v} == {}
