"""Launcher probe: init_distributed, all_reduce the rank, print one JSON line per rank."""
import json
import socket

import torch
import torch.distributed as dist

from megajepa.distributed import barrier, init_distributed, shutdown

info = init_distributed(timeout_minutes=2)
t = torch.tensor([float(info.rank)])
dist.all_reduce(t)
barrier()
print("PROBE " + json.dumps({"rank": info.rank, "local_rank": info.local_rank, "world": info.world_size,
                             "launcher": info.launcher, "sum": t.item(), "group_rank": dist.get_rank(),
                             "host": socket.gethostname(), "master": info.master_addr}), flush=True)
shutdown()
