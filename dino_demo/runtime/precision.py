"""Which precisions a device runs well, said once for the Runtime panel, the page and the command line.

`support(device)` reads what the hardware offers: on the CPU the flags of /proc/cpuinfo
(`avx512_bf16`, `amx_bf16`: matrix products in bfloat16 at two to four times the float32 rate)
and PyTorch's CPU capability (the widest vector code it dispatches to, "AVX512", "AVX2", ...);
on CUDA whether the card computes in bfloat16. Without native bfloat16 a CPU emulates it, and
bfloat16 runs are many times slower than float32 ones (see benchmarks/RESULTS.md): float32 stays
the default everywhere, and `Support.note(precision)` says what to expect of a choice.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .result import PRECISIONS
# /proc/cpuinfo flags of native bfloat16 arithmetic (AVX-512 BF16; AMX tiles, Sapphire Rapids on).
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Support:
    """What a device offers for reduced precision.

    device_type: "cpu" or "cuda"; capability: PyTorch's CPU capability ("AVX512", "AVX2", ...) or
    the CUDA card's name; native_bfloat16: matrix products run in bfloat16 in hardware;
    bfloat16_features: the CPU flags that say so (empty on CUDA or without them).
    """

    device_type: str
    capability: str
    native_bfloat16: bool
    bfloat16_features: tuple[str, ...] = ()

    def note(self, precision: str) -> str:
        """One sentence on how `precision` runs here (for the Runtime panel and --help)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        where = f"this {'CPU' if self.device_type == 'cpu' else 'GPU'} ({self.capability}"
        if self.native_bfloat16:
            native = f"{where}, native bfloat16: {', '.join(self.bfloat16_features) or 'yes'})"
        else:
            native = f"{where}, no native bfloat16)"
        if precision == "float32":
            hint = " bfloat16 would be faster." if self.native_bfloat16 and self.device_type == "cpu" else ""
            return f"float32 on {native}.{hint}"
        if precision == "bfloat16":
            if self.native_bfloat16:
                return f"bfloat16 matrix products on {native}; accumulation, softmax and the top-k scores in float32."
            return (f"bfloat16 on {native}: emulated, so much slower than float32 (the default); "
                    "choose it only to preview a bfloat16 deployment's results.")
        if self.device_type == "cpu":
            return f"float16 on {native}: PyTorch emulates it on most CPUs, much slower than float32."
        return f"float16 matrix products on {native}; accumulation, softmax and the top-k scores in float32."


def support(device: torch.device | str = "cpu") -> Support:
    """What `device` offers (see `Support`); reads /proc/cpuinfo once per call on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "no CUDA device"
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        return Support("cuda", name, bool(native))
    if device.type != "cpu":
        return Support(device.type, device.type, False)
    features = tuple(flag for flag in BFLOAT16_FLAGS if flag in cpu_flags())
    return Support("cpu", torch.backends.cpu.get_cpu_capability(), bool(features), features)


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU feature flags of the first processor in `cpuinfo` (empty where there is no such file:
    not Linux, or a sandbox)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()
