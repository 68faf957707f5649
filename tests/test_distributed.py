"""The end of a multi-process run: ``shared.engines.distributed.release_process_group`` leaves no gloo thread behind,
where ``destroy_process_group`` alone (the shared multi-GPU config's old ``finalize``) left three alive into the
interpreter's shutdown."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

SCRIPT = """
import importlib, os, sys
import torch, torch.distributed as dist
from shared.engines.distributed import communication_threads, release_process_group

os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2], RANK="0", WORLD_SIZE="1")
how = sys.argv[1]
if how == "release":
    importlib.import_module("torch._dynamo")  # as multi_gpu_train.json's initialize does, before the group exists
dist.init_process_group("gloo")
networks = [torch.nn.parallel.DistributedDataParallel(torch.nn.Conv2d(3, 3, 3)) for _ in range(4)]
sum(n(torch.randn(2, 3, 8, 8)).sum() for n in networks).backward()
before = len(communication_threads())
if how == "release":
    release_process_group(networks)
else:
    dist.barrier()
    dist.destroy_process_group()
print(before, len(communication_threads()), dist.is_initialized())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(sys.platform != "linux", reason="threads are counted from /proc/self/task")
@pytest.mark.parametrize("how,left", [("destroy", 3), ("release", 0)])
def test_releasing_the_process_group_joins_its_threads_while_python_is_alive(how, left):
    result = subprocess.run([sys.executable, "-c", SCRIPT, how, str(_free_port())], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    before, after, initialized = result.stdout.split()[-3:]
    assert int(before) == 3 and int(after) == left and initialized == "False"
