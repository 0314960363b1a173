"""Hostile values in the page's number fields and source box (ui/inputs.py, ui/choices.py): every
one is a ValueError with a short message, never another exception (a blank error on the page)."""
import numpy as np
import pytest

from dino_demo.ui import choices, inputs

HUGE = 10 ** 400  # a 401-digit integer, as JSON carries it


@pytest.mark.parametrize("value", [HUGE, -HUGE, str(HUGE), 10 ** 5000, "1e400", float("nan"), "inf"],
                         ids=["401 digits", "-401 digits", "401 digits text", "5001 digits", "1e400", "nan", "inf"])
def test_numbers_too_large_for_a_float_are_value_errors(value):
    with pytest.raises(ValueError, match="between") as info:
        inputs.number(value, "Query slot", 0, 899, integer=True)
    assert len(str(info.value)) < 120  # the value is shortened, not echoed in full
    with pytest.raises(inputs.ControlError, match="between"):
        inputs.PageControls.parse(max_detections=value)
    with pytest.raises(ValueError):
        inputs.index_or_all(value, "Head", 8)


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_booleans_are_not_numbers(value):
    with pytest.raises(ValueError, match="must be a number"):
        inputs.query_slot(value, 900)
    with pytest.raises(ValueError, match="must be a number"):
        inputs.index_or_all(value, "Level", 4)
    with pytest.raises(inputs.ControlError, match="must be a number") as info:
        inputs.PageControls.parse(slot=value)
    assert info.value.control == "slot"


def test_ordinary_numbers_still_parse():
    assert inputs.query_slot(1, 900) == 1 and inputs.query_slot("12", 900) == 12 and inputs.query_slot(3.0, 900) == 3
    assert inputs.index_or_all("all", "Head", 8) is None and inputs.index_or_all("2", "Head", 8) == 1


@pytest.mark.parametrize("url", ["HTTPS://example.com/w.pth", "Https://example.com/w.pth", "HTTP://example.com/w.pth"])
def test_url_schemes_in_capitals_are_urls_not_paths(url):
    choice = choices.resolve(choices.CUSTOM, url, None)
    assert choice.source == url and choice.model_id == url


def test_a_capitalised_url_is_downloaded(tmp_path, monkeypatch):
    import http.server
    import threading

    from dino_demo.sources.checkpoint import resolve_source

    body = b"weights"

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    for name in ("DINO_DEMO_OFFLINE", "HF_HUB_OFFLINE", "DINO_DEMO_PUBLIC", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"HTTP://127.0.0.1:{httpd.server_address[1]}/w.pth"
        source = choices.resolve(choices.CUSTOM, url, None).source
        assert resolve_source(source, cache_dir=tmp_path, progress=lambda *a: None).read_bytes() == body
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_typing_a_401_digit_slot_is_no_overflow():
    """The page's controls are parsed once (PageControls): a slot past any float is the slot box's
    range error (the page resets that box), never an OverflowError."""
    with pytest.raises(inputs.ControlError, match="between") as info:
        inputs.PageControls.parse(slot=HUGE, query=5)
    assert info.value.control == "slot" and len(str(info.value)) < 120
