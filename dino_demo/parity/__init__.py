"""The parity kit's tools: the deterministic weight recipe and the reference-layout dump."""
