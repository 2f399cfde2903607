"""The producer side of test_transfer_nixl, run as its own process: NIXL agents in one process share UCX state.

It speaks base64 lines on stdout (tagged: NIXL logs to stdout too) and reads commands on stdin, so the test
needs no multiprocessing machinery.
"""

from __future__ import annotations

import base64
import sys
import time

import psutil
import torch

from vllm_pd import wire
from vllm_pd.connector.transfer import KVTransport, regions_from_caches

TAG = "PD-TEST"
SHAPE = (16, 2, 32, 128)  # blocks, K/V, block size, heads x head dim
LAYERS = 2


def caches(fill: float) -> list[torch.Tensor]:
    return [torch.full(SHAPE, fill + layer) for layer in range(LAYERS)]


def say(*chunks: bytes) -> None:
    print(TAG, *(base64.b64encode(c).decode() for c in chunks), flush=True)


def main() -> None:
    held = caches(1.0)
    transport = KVTransport("producer", ["UCX"])
    transport.register(regions_from_caches(held, SHAPE[0], SHAPE[2]))
    say(wire.encode(transport.identity("producer", 0)))
    me = psutil.Process()
    before = sum(me.cpu_times()[:2])
    time.sleep(1.0)
    say(str(sum(me.cpu_times()[:2]) - before).encode())
    sys.stdin.readline()  # the consumer's READ is done
    deadline, notices = time.monotonic() + 5, []
    while not notices and time.monotonic() < deadline:
        notices = transport.notices()
        time.sleep(0.001)
    say(*(bytes(n) for n in notices))
    sys.stdin.readline()
    transport.close()


if __name__ == "__main__":
    main()
