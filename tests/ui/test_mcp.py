"""The app as MCP tools (Gradio's MCP server, switched on by DINO_DEMO_MCP=1): the schema Gradio
publishes names the tools and describes them and their parameters, and an agent can detect, then
inspect a detection's query, without a session (MCP calls share one) and without a second model run."""
import asyncio
import base64
import io
import json
import urllib.request

import pytest

from conftest import free_port

pytest.importorskip("mcp")

from dino_demo import env  # noqa: E402
from dino_demo.paths import EXAMPLES_DIR  # noqa: E402
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402

MODEL = "shipped" if DEFAULT_CHECKPOINT.is_file() else "untrained:dino-tiny"
IMAGE = EXAMPLES_DIR / "shapes-90210-9.png"
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword|gr.State input).*")


@pytest.fixture(scope="module")
def mcp_app():
    """The app launched on 127.0.0.1 with DINO_DEMO_MCP=1 (and nothing else asking for MCP)."""
    from dino_demo.ui import build_app, launch
    from dino_demo.ui.settings import AppSettings

    app = build_app(AppSettings(device="cpu", model_concurrency=1))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(env.MCP_VARIABLE, "1")
        patch.delenv("GRADIO_MCP_SERVER", raising=False)
        launch(app.demo, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    yield app
    app.demo.close()


def test_the_flag_is_read_through_the_env_module(monkeypatch):
    monkeypatch.delenv(env.MCP_VARIABLE, raising=False)
    assert env.mcp_server() is False
    monkeypatch.setenv(env.MCP_VARIABLE, "yes")
    assert env.mcp_server() is True
    monkeypatch.setenv(env.MCP_VARIABLE, "maybe")
    with pytest.raises(ValueError, match="DINO_DEMO_MCP"):
        env.mcp_server()


def test_the_published_schema_names_and_describes_the_tools(mcp_app):
    schema = json.load(urllib.request.urlopen(mcp_app.demo.local_url + "gradio_api/mcp/schema", timeout=30))
    tools = {tool["name"]: tool for tool in schema}
    assert set(tools) == {"detect", "inspect", "encoder", "internals"}
    for tool in tools.values():
        assert len(tool["description"]) > 60 and "Args:" not in tool["description"]
        assert tool["meta"]["endpoint_name"] == tool["name"]
    assert tools["detect"]["description"].startswith("Detect objects in an image with DINO")
    assert "query slot" in tools["detect"]["description"]
    detect = tools["detect"]["inputSchema"]
    assert detect["required"] == ["image"]  # every other parameter has the page's default
    assert set(detect["properties"]) == {"image", "model_choice", "checkpoint", "variant", "max_input", "threshold",
                                         "max_detections", "prompt"}
    assert "zoo:dino-4scale-r50" in detect["properties"]["model_choice"]["enum"]
    inspect = tools["inspect"]["inputSchema"]
    assert inspect["required"] == ["slot"]
    for name in ("slot", "layer", "head", "level", "point_color", "image", "model_choice"):
        assert len(inspect["properties"][name]["description"]) > 15, name
    assert "query_slot" in inspect["properties"]["slot"]["description"]
    assert inspect["properties"]["head"]["enum"][0] == "all"
    # internals works over MCP as inspect does: the image given to detect, not a session.
    internals = tools["internals"]
    assert internals["description"].startswith("Every array of DINO's result on an image as one internals.npz")
    assert "MCP agents" in internals["description"] and "no session" not in internals["description"]
    assert {"image", "model_choice"} <= set(internals["inputSchema"]["properties"])


async def _call(url: str, calls: list[tuple[str, dict]]):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return [await session.call_tool(name, arguments) for name, arguments in calls]


def test_an_agent_detects_then_inspects_a_query(mcp_app):
    models = mcp_app.services.models
    runs = []
    model_run = models._run
    models._run = lambda *args, **kwargs: runs.append(1) or model_run(*args, **kwargs)
    from PIL import Image

    upload = io.BytesIO()
    Image.open(IMAGE).crop((0, 0, 240, 200)).save(upload, "PNG")  # not an example: no shared example result
    image = "data:image/png;base64," + base64.b64encode(upload.getvalue()).decode()
    try:
        detected, inspected, no_image, internals, no_image_internals = asyncio.run(_call(
            mcp_app.demo.local_url + "gradio_api/mcp/", [
                ("detect", {"image": image, "model_choice": MODEL, "threshold": 0.0, "max_detections": 3}),
                ("inspect", {"slot": 0, "layer": 2, "head": "1", "image": image, "model_choice": MODEL}),
                ("inspect", {"slot": 0, "layer": 2}),
                ("internals", {"image": image, "model_choice": MODEL}),
                ("internals", {}),
            ]))
    finally:
        models._run = model_run
    text = " ".join(getattr(item, "text", "") for item in detected.content)
    assert not detected.isError and "query_slot" in text and "dino-explorer/detections/1" in text
    text = " ".join(getattr(item, "text", "") for item in inspected.content)
    assert not inspected.isError and "'query_slot': 0" in text and "'heads': [1]" in text
    assert len(runs) == 1  # inspect and internals reused the result of detect on the same image
    # Without the image, an MCP call has no session to read: it is refused, never another agent's result.
    assert no_image.isError and "no session" in " ".join(item.text for item in no_image.content)
    # internals: the file of that same result, found again by the image.
    text = " ".join(getattr(item, "text", "") or str(getattr(item, "resource", "")) for item in internals.content)
    assert not internals.isError and "internals.npz" in text, text
    assert no_image_internals.isError and "no session" in " ".join(item.text for item in no_image_internals.content)
