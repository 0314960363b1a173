"""torchvision, imported without `torch._dynamo` (the compiler stack: dynamo, inductor, triton,
sympy), which the first Detect never uses.

`import torchvision` imports every torchvision subpackage, and `torchvision.ops.roi_align` takes
one function from `torch._dynamo.utils` at import time: that alone pulls in PyTorch's compiler
stack, about as much CPU time as importing torch itself (benchmarks/RESULTS.md, "First answer").
`import_torchvision()` imports torchvision with that one name served by a stand-in that imports dynamo
when it is first called, and leaves no trace of the stand-in: `torch._dynamo` is imported for real
by whoever asks for it later (torch.compile, training). Modules of this package that need
torchvision first import it through here (`import_torchvision()`).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import types

# names that torchvision's modules take from torch._dynamo at import time
DEFERRED = {"torch._dynamo.utils": ("is_compile_supported",)}
_lock = threading.Lock()


def import_torchvision() -> types.ModuleType:
    """The torchvision module, imported (once) without importing `torch._dynamo`."""
    if "torchvision" in sys.modules or "torch._dynamo" in sys.modules:
        return importlib.import_module("torchvision")
    with _lock:
        if "torchvision" in sys.modules:
            return sys.modules["torchvision"]
        import torch

        finder = _StandInFinder()
        sys.meta_path.insert(0, finder)
        try:
            return importlib.import_module("torchvision")
        finally:
            sys.meta_path.remove(finder)
            for name in finder.made:  # the real modules load on the next import
                sys.modules.pop(name, None)
            if "torch._dynamo" in finder.made and isinstance(torch.__dict__.get("_dynamo"), _StandIn):
                del torch._dynamo  # torch's lazy attribute imports the real one on access


class _StandIn(types.ModuleType):
    """A module whose deferred names are functions that call the real module's function."""

    def __init__(self, name: str):
        super().__init__(name)
        self.__path__ = []  # a package, so that submodules can be stand-ins too
        for attribute in DEFERRED.get(name, ()):
            setattr(self, attribute, _deferred(name, attribute))

    def __getattr__(self, attribute: str):
        raise ImportError(f"{self.__name__}.{attribute} is not available while torchvision is being imported "
                          "(dino_demo.vision defers only the names in DEFERRED)")


def _deferred(module: str, attribute: str):
    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), attribute)(*args, **kwargs)

    call.__name__ = call.__qualname__ = attribute
    return call


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves `torch._dynamo` and the modules of DEFERRED as stand-ins while it is installed."""

    def __init__(self):
        self.made: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torch._dynamo" or fullname in DEFERRED:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        self.made.append(spec.name)
        return _StandIn(spec.name)

    def exec_module(self, module):
        return None
