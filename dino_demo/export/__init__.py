"""DINO as an ONNX file: `onnx` exports it (torch), `runtime` runs it with ONNX Runtime alone (no
torch), `metadata` is the contract between the two. Importing this package imports neither."""
