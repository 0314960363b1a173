"""DINO Explorer: run DINO on an image and look inside it. `python app.py` serves the page on
GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (127.0.0.1:7860 by default); `python app.py --mcp` (or
DINO_DEMO_MCP=1) serves its API as MCP tools too; `gradio app.py` serves `demo` with reloading.
Everything it shows comes from the `dino_demo` library (the page: `dino_demo.ui`)."""
import argparse
import logging

from dino_demo.ui import build_demo, launch

demo = build_demo()

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve DINO Explorer.")
    parser.add_argument("--mcp", action="store_true", default=None,
                        help="also serve the API endpoints as MCP tools (default: DINO_DEMO_MCP)")
    logging.basicConfig(level=logging.INFO)
    launch(demo, mcp_server=parser.parse_args().mcp)
