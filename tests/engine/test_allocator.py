import json
import subprocess
import sys

from tests.live import PROJECT_ROOT

# The default model's forward pass, six times in a fresh process; prints the fewest page faults of a warm pass.
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
print(json.dumps({"kept": kept, "faults": min(faults[2:]), "every_pass": faults}))
"""


def faults_of_a_warm_pass(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS_OF_A_WARM_PASS, mode],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_a_warm_forward_pass_reuses_the_memory_the_last_one_freed():
    default = faults_of_a_warm_pass("default")
    kept = faults_of_a_warm_pass("kept")
    assert kept["kept"] is True
    # With glibc's own thresholds each pass faults its feature maps in again (thousands of pages, ~14 MB).
    assert default["faults"] > 1000
    assert kept["faults"] < default["faults"] / 20, (default, kept)
