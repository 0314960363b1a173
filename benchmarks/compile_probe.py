"""torch.compile (inductor, CPU) against eager on the app's inference path: the first compiled call
(compile included) and the median of later calls, on synthetic scenes.

    TORCH_LOGS=graph_breaks python benchmarks/compile_probe.py weights/dino-tiny.pth

Inductor needs `freezing` for the pre-packed oneDNN linear layers of `explore.speed` (without it:
"weight must be a graph constant"). Prints one JSON line with the seconds.
"""
import time, json, sys, torch, numpy as np
from dino_demo.explore.models import load
from dino_demo.explore.inference import run
from dino_demo.train.synthetic import SceneSpec, generate_scene
src = sys.argv[1]
model, cfg = load(src)
imgs = [generate_scene(4242, i, SceneSpec(size=256)).image for i in range(4)]
def med(m):
    ts=[]
    for im in imgs:
        t=time.perf_counter(); run(m, cfg, im); ts.append(time.perf_counter()-t)
    return sorted(ts)[len(ts)//2]
run(model, cfg, imgs[0])
eager = med(model)
import resource
import torch._inductor.config as inductor_config
inductor_config.freezing = True
compiled = torch.compile(model, dynamic=False)
cpu0 = resource.getrusage(resource.RUSAGE_SELF); cpu0 = cpu0.ru_utime + cpu0.ru_stime
t=time.perf_counter(); run(compiled, cfg, imgs[0]); first=time.perf_counter()-t
cpu1 = resource.getrusage(resource.RUSAGE_SELF); cpu1 = cpu1.ru_utime + cpu1.ru_stime
print(json.dumps({"first_compiled_call_s": first, "first_compiled_call_cpu_s": cpu1 - cpu0, "eager_s": eager}), flush=True)
comp = med(compiled)
eager2 = med(model)
print(json.dumps({"eager_s": eager, "eager_again_s": eager2, "compiled_s": comp, "first_compiled_call_s": first,
                  "graph_breaks_note": "see TORCH_LOGS"}), flush=True)
