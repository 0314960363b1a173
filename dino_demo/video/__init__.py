"""Video: every frame of a clip through the one inference path, objects followed across frames.

- `clip`: what a clip is (frame rate, count, size), the limits a clip must keep, its frames decoded
  as [H, W, 3] uint8 RGB arrays (OpenCV);
- `tracking`: track ids for each frame's detections (ByteTrack, as `supervision` ships it);
- `document`: the video results file, `detections.json` with schema "dino-explorer/video/1";
- `annotate`: frames drawn with boxes, labels and track ids, written as an MPEG-4 clip;
- `engine`: the three steps (detect the frames, possibly split across torchrun's processes; track
  them in order; write the file, the annotated clip and the internals), used by
  `python -m dino_demo video`, the page's Video tab and `benchmarks/video.py`.
"""
