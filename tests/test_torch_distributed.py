"""grukern.torch.GRU under torch.distributed: DistributedDataParallel on 2 CPU ranks (gloo)
trains exactly as one process on the whole batch; the docs' example runs."""

from __future__ import annotations

import pathlib
import re
import socket
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from grukern.torch import GRU  # noqa: E402

WORLD = 2
B, T, I, H = 8, 6, 3, 5
STEPS = 3


class _Model(torch.nn.Module):
    """A stacked bidirectional grukern GRU and a linear head on its last output."""

    def __init__(self):
        super().__init__()
        self.gru = GRU(I, H, num_layers=2, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(2 * H, 1)

    def forward(self, x):
        y, _ = self.gru(x)
        return self.head(y[:, -1])


def _setup():
    """The same model, data and optimizer in every process."""
    torch.manual_seed(0)
    model = _Model().double()
    x = torch.randn(B, T, I, dtype=torch.float64)
    target = torch.randn(B, 1, dtype=torch.float64)
    return model, x, target


def _train(model, x, target, record):
    """STEPS SGD steps on a mean-squared loss; record(step, model) after each backward."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), target).backward()
        record(step, model)
        optimizer.step()


def _gradients(model) -> dict:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _rank(rank: int, port: int, out: str) -> None:
    """One DDP rank: trains on its half of the batch; rank 0 saves gradients and weights."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    model, x, target = _setup()
    rows = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
    grads = []
    _train(
        DistributedDataParallel(model), x[rows], target[rows],
        lambda step, m: grads.append(_gradients(model)),
    )  # fmt: skip
    if rank == 0:
        torch.save({"grads": grads, "state": model.state_dict()}, out)
    dist.destroy_process_group()
    # gloo's threads free a finished collective after Python has moved on, and need the GIL to
    # do it; a process that exits at once can abort (torch 2.13). Sleeping hands them the GIL.
    time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_on_two_ranks_trains_as_one_process_on_the_whole_batch(tmp_path):
    out = tmp_path / "rank0.pt"
    torch.multiprocessing.spawn(_rank, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    saved = torch.load(out)

    model, x, target = _setup()
    grads = []
    _train(model, x, target, lambda step, m: grads.append(_gradients(m)))
    # DDP averages the ranks' gradients of their half-batch means: the whole batch's mean.
    for step, (got, want) in enumerate(zip(saved["grads"], grads, strict=True)):
        for name in want:
            torch.testing.assert_close(
                got[name], want[name], rtol=1e-10, atol=1e-12, msg=f"step {step}, {name}"
            )
    for name, value in model.state_dict().items():
        torch.testing.assert_close(saved["state"][name], value, rtol=1e-10, atol=1e-12)


def test_the_scale_out_example_runs(tmp_path):
    doc = pathlib.Path(__file__).parents[1] / "docs" / "scale-out.md"
    (code,) = re.findall(r"```python\n(# ddp_train.py.*?)```", doc.read_text(), re.S)
    script = tmp_path / "ddp_train.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "rank 0: epoch 2 loss" in done.stdout, done.stdout
