"""DINO Explorer: run DINO on an image and look inside it. `python app.py` serves the page on
GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (127.0.0.1:7860 by default); `gradio app.py` serves `demo`
with reloading. Everything it shows comes from the `dino_demo` library (the page: `dino_demo.ui`)."""
import logging

from dino_demo.ui import build_demo, launch

demo = build_demo()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    launch(demo)
