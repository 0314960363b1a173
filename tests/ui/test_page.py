"""The page's events as Gradio calls them (one dict of control values in, one dict of component
updates out), without a browser: a failure leaves the last good views and says what failed on one
status line; a refused value is set back and reported once; an unusable upload is refused at
once; a query listed under two classes is one row and one label."""
import asyncio

import gradio as gr
import numpy as np
import pytest
from conftest import free_port
from gradio.state_holder import SessionState

from dino_demo.explore import panels
from dino_demo.runtime.detections import DetectionView, query_rows
from dino_demo.paths import EXAMPLES_DIR
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT
from dino_demo.ui import input_panel
from dino_demo.ui.detect import Detect

import page_support

MODEL = "shipped" if DEFAULT_CHECKPOINT.is_file() else "untrained:dino-tiny"
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")


class _Request:
    session_hash = "page-events"


@pytest.fixture(scope="module")
def app():
    from dino_demo.ui import build_app
    from dino_demo.ui.settings import AppSettings

    return build_app(AppSettings(device="cpu", model_concurrency=1))


@pytest.fixture(scope="module")
def events(app):
    from dino_demo.ui.events import PageEvents

    return PageEvents(app.ui, app.services)


class Page:
    """What the browser holds: every control's value, updated from each reply as Gradio does."""

    def __init__(self, app, events):
        self.app, self.events = app, events
        self.values = {name: component.value for name, component in app.ui.items() if component in events.inputs}
        self.values.update(image_in=str(EXAMPLES_DIR / "chelsea.png"), model_choice=MODEL, threshold=0.0,
                           max_detections=20)
        self.shown: dict[str, object] = {}

    def _apply(self, reply: dict) -> dict:
        if reply == gr.skip():  # nothing changed (every output skipped)
            return {}
        by_name = {_name(self.app.ui, c): v for c, v in reply.items()}
        for name, value in by_name.items():
            value = getattr(value, "value", value) if not isinstance(value, (dict, list, str)) else value
            self.shown[name] = value
            if name in self.values:
                self.values[name] = value
        return by_name

    def call(self, method: str, **changes) -> dict:
        self.values.update(changes)
        components = {self.app.ui[name]: value for name, value in self.values.items()}
        if method == "detect":
            detect = Detect(self.app.services).detect
            reply = self.events.handler(detect, redraw=False)(components, _Request(), progress=lambda *a, **k: None)
        else:
            handler = self.events.handler(page_support.handler(self.app.services, method))
            reply = handler(components, _Request())
        return self._apply(reply)


    def call_tab(self, method, point=None, **changes) -> dict:
        """A tab's event: its own controls (`changes`, by view name) sent beside the page's."""
        self.values.update(changes)
        components = {self.app.ui[name]: value for name, value in self.values.items()}
        if point is None:
            reply = self.events.handler(method, redraw=False)(components, _Request())
        else:
            reply = self.events.handler(method, selected=True, redraw=False)(components, _Select(point), _Request())
        return self._apply(reply)


class _Select:
    def __init__(self, index):
        self.index = index


def _event(app, component, trigger: str):
    """The page's Gradio event of `component.trigger`."""
    return next(fn for fn in app.demo.fns.values() if (component._id, trigger) in [tuple(t) for t in fn.targets])


def _name(ui, component):
    return next(name for name, c in ui.items() if c is component)


def test_a_failed_detect_keeps_the_last_views_and_says_why_on_one_line(app, events):
    page = Page(app, events)
    first = page.call("detect")
    assert first["status"] == "" and first["det_image"] and first["det_json"]["images"][0]["detections"]
    drawn = dict(page.shown)
    failed = page.call("detect", model_choice="custom", checkpoint="/nonexistent/ck.pth")
    assert set(failed) == {"status"}  # nothing else is touched: the last good views stay
    assert failed["status"].startswith("⚠") and "only from" in failed["status"] and "\n" not in failed["status"]
    assert page.shown["det_image"] == drawn["det_image"]
    failed = page.call("detect", model_choice=MODEL, image_in=None)
    assert "Upload an image" in failed["status"]
    # A re-draw still works on the kept result, and clears the status line.
    redrawn = page.call("change_detection_options", threshold=0.5)
    assert redrawn["status"] == "" and "det_image" in redrawn


def test_a_zoo_model_that_cannot_be_downloaded_is_one_line_with_its_remedy(app, events, local_zoo, monkeypatch):
    """Offline, the status line says why and, whole, what to do: the file's URL and where to put it
    (this machine's folder; a public server names `$DINO_DEMO_CACHE/zoo/...` instead, as `zoo.resolve`
    writes it)."""
    import dataclasses

    from dino_demo.sources import zoo

    closed = free_port()
    broken = dataclasses.replace(local_zoo, id="broken-tiny", urls=(f"http://127.0.0.1:{closed}/tiny.pth",))
    monkeypatch.setattr(zoo, "ENTRIES", (*zoo.ENTRIES, broken))
    monkeypatch.setattr(zoo, "_BY_ID", {**zoo._BY_ID, broken.id: broken})
    page = Page(app, events)
    page.call("detect")
    failed = page.call("detect", model_choice=broken.source_id)
    assert set(failed) == {"status"} and failed["status"].startswith(f"⚠ Could not download {broken.name}")
    assert "connection refused" in failed["status"].lower()
    remedy = f"download {broken.urls[0]} yourself and put it at {zoo.local_path(broken)}."
    assert failed["status"].endswith(remedy) and "\n" not in failed["status"] and "…" not in failed["status"]


def test_a_long_failure_keeps_its_whole_remedy_on_one_line():
    """A download library's page of text is cut in the middle: the head says why, the end (where a
    zoo download failure says what to do) stays whole."""
    from dino_demo.ui.model_cache import one_line

    remedy = "to use dino-4scale-r50 without a network, download https://example.org/a/b/c.pth yourself"
    text = one_line(ValueError("huggingface.co is unreachable\n" + "detail " * 200 + "; " + remedy))
    assert text.startswith("huggingface.co is unreachable detail") and text.endswith(remedy + ".")
    assert "\n" not in text and " … " in text and len(text) < 700


def test_a_typed_slot_the_model_lacks_is_set_back_and_reported_once(app, events):
    page = Page(app, events)
    page.call("detect")
    shown = page.values["slot"]
    refused = page.call("type_slot", slot=5000)
    assert refused["slot"] == shown and "Query slot" in refused["status"]
    assert page.call("type_slot") == {}  # leaving the box: the value shown, nothing to say again
    assert page.values["slot"] == shown and page.shown["status"] == refused["status"]
    typed = page.call("type_slot", slot=shown + 1)
    assert typed["slot"] == shown + 1 and typed["status"] == ""


def test_an_event_that_changes_nothing_answers_what_gradio_accepts(app, events):
    """The slot shown typed again (Enter, then leaving the box), a redraw before any Detect: no view
    changes, and Gradio gets a reply for every output (an empty dict would be too few values)."""
    fresh = Page(app, events)
    values = {app.ui[name]: value for name, value in fresh.values.items()}
    before_detect = events.handler(page_support.handler(app.services, "inspect"))(values, _Request())
    page = Page(app, events)
    page.call("detect")
    values = {app.ui[name]: value for name, value in page.values.items()}
    unchanged = events.handler(page_support.handler(app.services, "type_slot"))(values, _Request())
    for reply, (component, trigger) in ((before_detect, (app.ui.layer, "release")),
                                        (unchanged, (app.ui.slot, "submit")), (unchanged, (app.ui.slot, "blur"))):
        assert reply == gr.skip()
        block_fn = _event(app, component, trigger)
        state = SessionState(app.demo)
        state[app.ui.session._id] = kept = object()
        out = asyncio.run(app.demo.postprocess_data(block_fn, reply, state))
        assert len(out) == len(block_fn.outputs)
        assert all(value == (None if block.stateful else gr.skip()) for value, block in zip(out, block_fn.outputs))
        assert state[app.ui.session._id] is kept  # the session's state stays


def test_a_token_outside_the_grid_is_set_back(app, events):
    page = Page(app, events)
    page.call("detect")
    picked = page.call("select_token", token_level="1", token_row=1, token_col=2)
    assert (picked["token_row"], picked["token_col"]) == (1, 2)
    refused = page.call("select_token", token_row=10_000)
    assert (refused["token_row"], refused["token_col"]) == (1, 2) and "⚠" in refused["status"]


def test_an_upload_that_is_not_an_image_is_refused_at_once(app, events, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    reply = input_panel.upload_reply(app.ui, {"path": str(text), "orig_name": "notes.png"})
    by_name = {_name(app.ui, c): v for c, v in reply.items()}
    assert by_name["image_in"] is None and "Cannot use notes.png" in by_name["status"]
    fine = input_panel.upload_reply(app.ui, {"path": str(EXAMPLES_DIR / "chelsea.png"), "orig_name": "chelsea.png"})
    assert {_name(app.ui, c): v for c, v in fine.items()} == {"status": ""}


def _two_classes_one_box() -> DetectionView:
    """Query 7 listed twice (cat, then dog), query 3 once, as the official top-k lists them."""
    box = [10.0, 10.0, 50.0, 60.0]
    return DetectionView(boxes=np.array([box, [0, 0, 20, 20], box]), scores=np.array([0.81, 0.5, 0.12]),
                         labels=np.array([1, 2, 3]), categories=np.array([1, 2, 3]), query_slots=np.array([7, 3, 7]),
                         names=("cat", "bird", "dog"))


def test_a_query_listed_under_two_classes_is_one_row_and_one_label(monkeypatch):
    view = _two_classes_one_box()
    rows = query_rows(view)
    assert rows.captions == ("cat 0.81 · dog 0.12", "bird 0.50") and rows.query_slots.tolist() == [7, 3]
    table = panels.detection_table(view, 7).data
    assert table["label"].tolist() == ["cat 0.81 · dog 0.12", "bird 0.50"] and table["slot"].tolist() == [7, 3]
    drawn = {}

    def capture(canvas, boxes, captions, class_ids, *, selected=None):
        drawn.update(boxes=boxes, captions=list(captions), selected=selected)
        return canvas

    monkeypatch.setattr(panels, "render_detections", capture)

    class Stored:
        canvas, scale = np.zeros((80, 80, 3), np.uint8), 1.0

    panels.detections_image(Stored(), view, 7)
    assert drawn["captions"] == ["cat 0.81 · dog 0.12", "bird 0.50"] and len(drawn["boxes"]) == 2
    assert drawn["selected"] == 0


def test_the_tabs_of_dinos_ideas_answer_through_the_page_events(app, events, tmp_path):
    """Query selection and look forward twice come with a Detect; the Denoising and Forward pass
    tabs read the page's image, model and thresholds from the same event, and a bad value of
    theirs is one status line."""
    from dino_demo.ui.denoising_tab import CONTROLS, DenoisingTab
    from dino_demo.ui.steps_tab import TraceTab

    page = Page(app, events)
    page.values.update({name: app.ui[name].value for name in CONTROLS})
    drawn = page.call("detect")
    assert f"Query slot {page.values['slot']}" in drawn["sel_info"] and "tgt_embed" in drawn["sel_info"]
    assert drawn["sel_maps"] is not None and drawn["sel_step"] is not None
    chosen = page.call("type_slot", slot=page.values["slot"] + 1)
    assert f"Query slot {page.values['slot']}" in chosen["sel_info"] and "sel_maps" not in chosen
    assert chosen["sel_step"] is not None and chosen["twice_image"] is not None
    assert len(drawn["twice_table"]) == drawn["refine_table"].shape[0] - 1  # one row per decoder layer

    tab = DenoisingTab(app.services)
    assert "Give at least one box" in page.call_tab(tab.run)["status"]
    taken = page.call_tab(tab.take_detections)
    assert taken["status"] == "" and len(taken["dn_boxes"].splitlines()) == len(page.shown["det_json"]["images"][0]
                                                                                ["detections"])
    ran = page.call_tab(tab.run, dn_seed=3)
    assert ran["status"] == "" and "groups" in ran["dn_info"] and ran["dn_download"].endswith("denoising.npz")
    assert {"positive", "negative"} == set(ran["dn_table"]["kind"])
    negatives = page.call_tab(tab.redraw, dn_kinds=["negative"])
    assert set(negatives["dn_table"]["kind"]) == {"negative"}
    refused = page.call_tab(tab.redraw, dn_group=ran["dn_group"].maximum + 1)
    assert set(refused) == {"status"} and "Group must lie in" in refused["status"]

    page.call_tab(tab.show_canvas)
    first = page.call_tab(tab.click_corner, point=(10, 12), dn_boxes="", dn_category=2)
    assert first["dn_corner"] is not None and "First corner" in first["dn_info"]
    second = page.call_tab(tab.click_corner, point=(40, 52))
    assert second["dn_corner"] is None and second["dn_boxes"].split()[-1] == "2"

    boxes = tmp_path / "boxes.json"
    boxes.write_text('{"boxes": [{"bbox": [5, 6, 30, 40], "category_id": 1}]}')
    read = page.call_tab(tab.read_file, dn_file={"path": str(boxes), "orig_name": "boxes.json"})
    assert read["dn_boxes"] == "5.0 6.0 30.0 40.0 1"

    walked = page.call_tab(TraceTab(app.services).walk)
    assert walked["status"] == "" and "level_start_index" in set(walked["trace_table"]["name"])
    assert walked["trace_json"]["schema"] == "dino-explorer/trace/1"


def test_the_precision_choice_runs_the_model_in_it_and_the_runtime_panel_says_which(app, events):
    """The Precision radio is a Detect control: the run (and its example-cache entry) is in the
    chosen precision, the Runtime panel says which and what the device offers, and a value
    outside the choices is one status line."""
    from dino_demo.runtime import precision

    radio = next(c for c in app.demo.config["components"] if c.get("props", {}).get("elem_id") == "precision")
    assert [choice[0] for choice in radio["props"]["choices"]] == list(precision.PRECISIONS)
    assert radio["props"]["value"] == "float32" and "native bfloat16" in radio["props"]["info"]

    page = Page(app, events)
    assert page.values["precision"] == "float32"
    half = page.call("detect", max_input=128, precision="bfloat16")
    assert half["status"] == ""
    assert "**Precision** bfloat16: " + precision.support("cpu").note("bfloat16") in half["runtime"]
    # The same example in float32 is a run of its own, not the bfloat16 result reused.
    full = page.call("detect", precision="float32")
    assert "**Precision** float32: " in full["runtime"] and "reused" not in full["runtime"]
    again = page.call("detect", precision="bfloat16")
    assert "**Precision** bfloat16: " in again["runtime"] and "reused" in again["runtime"]
    refused = page.call("detect", precision="float8")
    assert set(refused) == {"status"} and "Precision must be one of" in refused["status"]
