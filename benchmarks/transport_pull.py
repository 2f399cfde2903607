"""PDConnector's transfer layer alone: pull time between two processes, by how long NIXL's progress
thread may wait between polls and how often the consumer polls (an engine step polls once).

    UCX_NET_DEVICES=lo python benchmarks/transport_pull.py --progress-wait-us 20000 0 --poll-ms 2 20

The producer registers 8 layers x 256 blocks of 128 KiB (KV-shaped, float32) and hands over its
identity; the consumer pulls the first 4, 16 and 64 blocks of every layer (one run per layer, so
8 descriptors, as in the connector benchmark) and reports the median of --repeats pulls.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import subprocess
import sys
import time

BLOCKS, LAYERS, BLOCK_SHAPE = 256, 8, (2, 32, 8 * 64)
TAG = "PULL-BENCH"


def _caches(fill: float) -> list:
    import torch

    return [torch.full((BLOCKS, *BLOCK_SHAPE), fill) for _ in range(LAYERS)]


def _transport(name: str, caches: list, wait_us: int):
    from vllm_pd.connector import transfer

    transfer.PROGRESS_WAIT_US = wait_us
    transport = transfer.KVTransport(name, ["UCX"])
    transport.register(transfer.regions_from_caches(caches, BLOCKS, BLOCK_SHAPE[1]))
    return transport


def producer(wait_us: int) -> None:
    from vllm_pd import wire

    caches = _caches(1.0)
    transport = _transport("producer", caches, wait_us)
    print(TAG, base64.b64encode(wire.encode(transport.identity("producer", 0))).decode(), flush=True)
    sys.stdin.readline()
    transport.close()


def consumer(wait_us: int, poll_s: float, sizes: list[int], repeats: int) -> list[dict]:
    import msgspec

    from vllm_pd import wire
    from vllm_pd.connector.runs import merge_runs

    proc = subprocess.Popen([sys.executable, __file__, "--producer", "--progress-wait-us", str(wait_us)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        while not (line := proc.stdout.readline()).startswith(TAG):
            if not line:
                raise SystemExit("the producer exited before it sent its identity")
        reply = msgspec.msgpack.decode(base64.b64decode(line.split()[1]), type=wire.HandshakeReply)
        caches = _caches(0.0)
        transport = _transport("consumer", caches, wait_us)
        peer = transport.add_peer(reply, time.time(), time.time())
        results = []
        for blocks in sizes:
            times = []
            for rep in range(repeats):
                notice = wire.encode(wire.PullNotice("done", f"r{blocks}-{rep}", "bench"))
                start = time.perf_counter()
                pull = transport.read(peer, merge_runs(list(range(blocks)), list(range(blocks))),
                                      expires=time.time() + 60)
                while (state := transport.poll(pull)) == "PROC":
                    time.sleep(poll_s)
                if state != "DONE":
                    raise SystemExit(f"pull of {blocks} blocks ended {state}")
                transport.notify(peer, notice)
                times.append(time.perf_counter() - start)
            mib = blocks * LAYERS * caches[0][0].nbytes / 2**20
            median = statistics.median(times)
            results.append({"progress_wait_us": wait_us, "poll_ms": poll_s * 1e3, "mib": mib,
                            "median_ms": median * 1e3, "gbps": mib * 2**20 / median / 1e9})
        transport.close()
        return results
    finally:
        proc.stdin.write("bye\n")
        proc.stdin.flush()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--progress-wait-us", type=int, nargs="+", default=[20000, 0])
    parser.add_argument("--poll-ms", type=float, nargs="+", default=[2.0, 20.0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[4, 16, 64], help="blocks per layer per pull")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--producer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.producer:
        producer(args.progress_wait_us[0])
        return 0
    print("| progress wait us | consumer polls every ms | MiB | median pull ms | GB/s |")
    print("|---|---|---|---|---|")
    for poll_ms in args.poll_ms:
        for wait_us in args.progress_wait_us:
            for r in consumer(wait_us, poll_ms / 1e3, args.blocks, args.repeats):
                print(f"| {wait_us} | {poll_ms:g} | {r['mib']:.0f} | {r['median_ms']:.1f} | {r['gbps']:.2f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
