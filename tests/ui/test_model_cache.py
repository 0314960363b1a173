"""The model cache under a server's load: downloads have slots of their own and are refused at once
when those are taken, and the models held are bounded by memory as well as by count."""
import gc
import threading
import time
import weakref

import pytest

from dino_demo.explore import models
from dino_demo.explore.models import DownloadsBusy, ModelCache
from dino_demo.sources.checkpoint import DEFAULT_CHECKPOINT

TINY = "untrained:dino-tiny"
needs_weights = pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="shipped weights not present")


def test_stalled_downloads_take_only_their_slots(monkeypatch):
    from dino_demo.sources.download import DownloadError

    release = threading.Event()

    def stalled_download(source, **kwargs):  # the file is fetched before the model is built
        release.wait(30)  # a download that never answers
        raise DownloadError("the download failed")

    monkeypatch.setattr(models, "resolve_source", stalled_download)
    monkeypatch.setattr(models, "needs_download", lambda source: str(source).startswith("zoo:"))
    cache = ModelCache(capacity=2, download_slots=2)
    cache.get(TINY)  # loaded before the downloads start
    stalled = [threading.Thread(target=lambda: pytest.raises(ValueError, cache.get, "zoo:dino-4scale-r50"))
               for _ in range(2)]
    for thread in stalled:
        thread.start()
    time.sleep(0.3)
    start = time.perf_counter()
    with pytest.raises(DownloadsBusy, match="try again"):
        cache.get("zoo:dino-5scale-r50")  # a third download: refused at once, not queued behind the stalled ones
    assert cache.get(TINY).config.name == "dino-tiny"  # a loaded model is served meanwhile
    assert time.perf_counter() - start < 0.5
    # A load from this machine takes no download slot.
    local = str(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.is_file() else TINY
    assert cache.get(local, "dino-tiny").config.name == "dino-tiny"
    release.set()
    for thread in stalled:
        thread.join(10)
    assert cache.get(TINY, "dino-tiny").config.name == "dino-tiny"  # slots are given back


@needs_weights
def test_models_are_bounded_by_memory_and_dropped_ones_are_freed():
    released = []
    budget = 20 * 1024**2  # one dino-tiny (12 MiB) at a time
    cache = ModelCache(capacity=2, max_bytes=budget, released=lambda: released.append(1))
    sources = [(TINY, None), (str(DEFAULT_CHECKPOINT), None), (str(DEFAULT_CHECKPOINT), "dino-tiny")]
    alive = []
    for round_ in range(2):
        for source, variant in sources:
            model = cache.get(source, variant).model
            alive.append(weakref.ref(model))
            del model
            assert len(cache) == 1 and cache.nbytes <= budget
    gc.collect()
    assert sum(ref() is not None for ref in alive) == 1  # every dropped model is gone from memory
    assert released  # and the app was told, to hand the memory back


def test_a_model_larger_than_the_budget_is_still_held_alone():
    cache = ModelCache(capacity=2, max_bytes=1024)
    cache.get(TINY)
    assert len(cache) == 1 and cache.nbytes > 1024


def test_only_files_not_on_this_machine_need_a_download(tmp_path, monkeypatch):
    from dino_demo.sources import zoo
    from dino_demo.sources.checkpoint import url_file_name

    monkeypatch.setenv("DINO_DEMO_CACHE", str(tmp_path))
    monkeypatch.setattr(zoo, "cached_path", lambda entry: None)
    assert models.needs_download("zoo:dino-4scale-r50") and models.needs_download("HTTPS://example.com/w.pth")
    url = "https://example.com/w.pth"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / url_file_name(url)).write_bytes(b"x")
    assert not models.needs_download(url)
    assert not models.needs_download(TINY) and not models.needs_download(str(DEFAULT_CHECKPOINT))


def test_expected_sizes_come_from_the_variant_without_building_it():
    assert 170 << 20 < models.expected_bytes("untrained:dino-4scale-r50") < 190 << 20
    assert models.expected_bytes("zoo:dino-5scale-swinl") > 800 << 20
    assert models.expected_bytes("/no/such/file.pth") == 0


def test_the_app_settings_bound_the_model_cache(monkeypatch):
    from dino_demo.ui.model_cache import PageModels
    from dino_demo.ui.settings import AppSettings

    monkeypatch.setenv("DINO_DEMO_PUBLIC", "1")
    monkeypatch.delenv("DINO_DEMO_MODEL_CACHE_MB", raising=False)
    settings = AppSettings.from_env()
    assert settings.model_cache_mb == 1024 and settings.download_concurrency == 2
    models = PageModels(settings).cache
    assert models.max_bytes == 1024**3 and models.download_slots == 2
    monkeypatch.setenv("DINO_DEMO_MODEL_CACHE_MB", "300")
    assert AppSettings.from_env().model_cache_mb == 300


def test_a_failed_download_drops_no_model(monkeypatch):
    from dino_demo.sources.download import DownloadError

    def failing(source, **kwargs):
        raise DownloadError("the download failed")

    monkeypatch.setattr(models, "needs_download", lambda source: str(source).startswith("zoo:"))
    monkeypatch.setattr(models, "resolve_source", failing)
    cache = ModelCache(capacity=1, max_bytes=20 * 1024**2)
    cache.get(TINY)
    with pytest.raises(DownloadError):
        cache.get("zoo:dino-5scale-swinl")
    assert len(cache) == 1  # the resident model stays
