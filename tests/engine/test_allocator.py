from tests.live import in_a_fresh_process

# The default model's forward pass, six times in a fresh process; prints the page faults of the four warm passes.
FAULTS_OF_A_WARM_PASS = """
import json, resource, sys
import torch
from app.config import Settings
from app.engine.allocator import keep_freed_memory
from app.engine.models import ModelRegistry

kept = keep_freed_memory() if sys.argv[1] == "kept" else None
torch.set_num_threads(1)
settings = Settings()
model = ModelRegistry.from_folder(settings.models_dir, settings.weights_dir).get("efficientnet_lite0").module
batch = torch.rand(1, 3, 224, 224)
faults = []
with torch.inference_mode():
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        model(batch)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "warm_passes": faults[2:]}))
"""


def test_a_warm_forward_pass_reuses_the_memory_the_last_one_freed():
    default = in_a_fresh_process(FAULTS_OF_A_WARM_PASS, "default")
    kept = in_a_fresh_process(FAULTS_OF_A_WARM_PASS, "kept")
    assert kept["kept"] is True
    # With glibc's own thresholds a pass faults its feature maps in again (thousands of pages, ~14 MB): nearly every
    # pass, though now and then the heap's layout spares one.
    assert max(default["warm_passes"]) > 1000, default
    # Kept, none of them does.
    assert max(kept["warm_passes"]) < max(default["warm_passes"]) / 20, (default, kept)


# On a worker thread, three times: 256 MB in 4 MB pieces, all freed. "thresholds" sets only the two thresholds, by
# hand, as the server did before it fixed the top pad too.
FAULTS_OF_A_FREED_WORKING_SET = """
import ctypes, json, resource, sys, threading
from app.engine import allocator

if sys.argv[1] == "kept":
    allocator.keep_freed_memory()
else:
    mallopt = ctypes.CDLL(None).mallopt
    mallopt(allocator._M_MMAP_THRESHOLD, allocator._MMAP_THRESHOLD)
    mallopt(allocator._M_TRIM_THRESHOLD, allocator._TRIM_THRESHOLD)

def work(result):
    faults = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        pieces = [bytearray(4 * 1024 * 1024) for _ in range(64)]
        del pieces
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    result["faults"] = faults
"""


# Appended to a script that defines ``work(result)``: runs it on a thread of its own, as the inference workers run.
ON_A_WORKER_THREAD = """
result = {}
worker = threading.Thread(target=work, args=(result,))
worker.start()
worker.join()
print(json.dumps(result))
"""


def test_a_worker_thread_keeps_the_heaps_it_freed():
    thresholds = in_a_fresh_process(FAULTS_OF_A_FREED_WORKING_SET + ON_A_WORKER_THREAD, "thresholds")
    kept = in_a_fresh_process(FAULTS_OF_A_FREED_WORKING_SET + ON_A_WORKER_THREAD, "kept")
    # With the thresholds alone, glibc unmaps each of the thread arena's heaps that became free (50,180 faults a
    # pass here); the top pad keeps them, so only the first pass faults its pages in.
    assert min(thresholds["faults"][1:]) > 20_000, thresholds
    assert max(kept["faults"][1:]) < 500, kept


# On one thread: optionally prefault 64 MB, then allocate and keep 40 MB of maps as the analysis store does.
FAULTS_OF_KEPT_MAPS = """
import json, resource, sys, threading
import torch
from app.engine.allocator import keep_freed_memory, prefault_heap

keep_freed_memory()

def work(result):
    result["touched"] = prefault_heap(64_000_000) if sys.argv[1] == "prefaulted" else 0
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    kept = [torch.rand(250_000) for _ in range(40)]  # 1 MB each
    result["faults"] = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
    result["kept"] = len(kept)
"""


def test_maps_kept_after_a_prefault_land_on_pages_already_resident():
    fresh = in_a_fresh_process(FAULTS_OF_KEPT_MAPS + ON_A_WORKER_THREAD, "fresh")
    prefaulted = in_a_fresh_process(FAULTS_OF_KEPT_MAPS + ON_A_WORKER_THREAD, "prefaulted")
    assert prefaulted["touched"] >= 64_000_000
    # 40 MB of new memory is about 10,000 pages of 4 kB, each faulted in on first use. After a prefault about 1,000
    # remain: malloc serves the first few maps from the untouched end of its heap before the freed pieces.
    assert fresh["faults"] > 5000, fresh
    assert prefaulted["faults"] < fresh["faults"] / 4, (fresh, prefaulted)
