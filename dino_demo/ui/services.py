"""The app-wide services every tab uses, made once per app: `settings`, `models` (the model cache
and the model-run slots), `results` (the result store, Detect's runs, the example cache) and
`sessions` (per-visitor names, download folders and their removal)."""
from __future__ import annotations

from dataclasses import dataclass

from .model_cache import PageModels
from .results import Results
from .session import Sessions
from .settings import AppSettings
from .store import ResultStore


@dataclass(frozen=True)
class Services:
    settings: AppSettings
    models: PageModels
    results: Results
    sessions: Sessions

    @classmethod
    def make(cls, settings: AppSettings, *, result_budget_bytes: int | None = None) -> "Services":
        """The services of one app; `result_budget_bytes` overrides the result store's budget
        (`settings.result_budget_mb`)."""
        store = ResultStore(result_budget_bytes or settings.result_budget_mb * 1024**2)
        models = PageModels(settings)
        return cls(settings, models, Results(store, models), Sessions(store))
