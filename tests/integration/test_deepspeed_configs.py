"""Every shipped DeepSpeed JSON starts an engine on CPU and takes two optimizer steps.

DeepSpeed 0.19.8 refuses a client torch AdamW under ZeRO-Offload unless the JSON sets
``"zero_force_ds_cpu_optimizer": false``; a JSON that only parses would not catch that.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JSONS = sorted((ROOT / "configs/deepspeed").glob("*.json"))

STEPS = r"""
import json, sys, torch
from videotrain import distributed
from videotrain.optim import OptimConfig, build_adamw

class Task(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        return torch.nn.functional.mse_loss(self.model(x), y)

distributed.init_distributed()
results = {}
for path in sys.argv[1:]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    cfg = distributed.deepspeed_config(path, micro_batch=4, grad_accum=1, grad_clip=1.0, precision="fp32",
                                       zero_stage=None)
    engine = distributed.build_engine(Task(model), build_adamw(model, OptimConfig(lr=1e-2)), cfg)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 8, generator=g), torch.randn(4, 1, generator=g)
    losses = []
    for _ in range(2):
        loss = engine(x, y)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    results[path] = {"stage": engine.zero_optimization_stage(), "losses": losses}
print("RESULTS " + json.dumps(results))
"""


def test_every_shipped_deepspeed_json_builds_an_engine_and_steps():
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", STEPS, *map(str, JSONS)], env=env, capture_output=True, text=True, timeout=600
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULTS ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    results = json.loads(line[0].removeprefix("RESULTS "))
    assert sorted(results) == sorted(map(str, JSONS))
    stages = {Path(p).name: r["stage"] for p, r in results.items()}
    assert stages == {"zero0.json": 0, "zero1.json": 1, "zero2.json": 2, "zero3_offload.json": 3}
    reference = results[str(ROOT / "configs/deepspeed/zero0.json")]["losses"]
    for path, r in results.items():
        first, second = r["losses"]
        assert second < first, (path, r)  # the optimizer stepped
        # Same data, weights and AdamW: every stage (and the offloaded optimizer) takes the same step.
        assert abs(first - reference[0]) < 1e-6 and abs(second - reference[1]) < 1e-4, (path, r, reference)
