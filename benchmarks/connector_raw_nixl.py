"""Raw NIXL between two processes (the ceiling a connector is measured against), and a check of
PDConnector's transfer layer on real memory (DRAM here, VRAM on a GPU machine).

    python benchmarks/connector_raw_nixl.py --device cpu --sizes-mib 16 64 256
    python benchmarks/connector_raw_nixl.py --device cuda --check   # where a GPU is lent

The target process registers a buffer and hands its NIXL metadata over a pipe; the initiator READs
it: one descriptor per transfer for the ceiling, KV-shaped regions and block runs for the check.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time

MIB = 1 << 20


def _tensor(nbytes: int, device: str, fill: int):
    import torch

    return torch.full((nbytes,), fill, dtype=torch.uint8, device=device)


def _raw_target(conn, nbytes: int, device: str) -> None:
    from nixl._api import nixl_agent, nixl_agent_config

    agent = nixl_agent("target", nixl_agent_config(backends=["UCX"]))
    buf = _tensor(nbytes, device, 7)
    mem = "DRAM" if device == "cpu" else "VRAM"
    agent.register_memory([(buf.data_ptr(), nbytes, max(buf.get_device(), 0), "")], mem)
    conn.send((agent.get_agent_metadata(), buf.data_ptr(), max(buf.get_device(), 0)))
    conn.recv()  # stay alive until the initiator is done


def raw_ceiling(sizes_mib: list[int], device: str = "cpu", repeats: int = 5) -> list[dict]:
    """Median READ bandwidth of one contiguous descriptor, per size, between two processes."""
    from nixl._api import nixl_agent, nixl_agent_config

    ctx = mp.get_context("spawn")
    results = []
    for size in sizes_mib:
        nbytes = size * MIB
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_raw_target, args=(child, nbytes, device), daemon=True)
        proc.start()
        try:
            meta, addr, dev = parent.recv()
            agent = nixl_agent(f"initiator-{size}", nixl_agent_config(backends=["UCX"]))
            dst = _tensor(nbytes, device, 0)
            mem = "DRAM" if device == "cpu" else "VRAM"
            agent.register_memory([(dst.data_ptr(), nbytes, max(dst.get_device(), 0), "")], mem)
            name = agent.add_remote_agent(meta)
            local = agent.prep_xfer_dlist("NIXL_INIT_AGENT", [(dst.data_ptr(), nbytes, max(dst.get_device(), 0))], mem)
            remote = agent.prep_xfer_dlist(name, [(addr, nbytes, dev)], mem)
            times = []
            for _ in range(repeats + 1):  # the first READ warms the connection up
                handle = agent.make_prepped_xfer("READ", local, [0], remote, [0])
                t0 = time.perf_counter()
                state = agent.transfer(handle)
                while state == "PROC":
                    state = agent.check_xfer_state(handle)
                times.append(time.perf_counter() - t0)
                agent.release_xfer_handle(handle)
                if state != "DONE":
                    raise RuntimeError(f"raw READ failed: {state}")
            if int(dst[::MIB].min()) != 7:
                raise RuntimeError("raw READ moved wrong bytes")
            median = statistics.median(times[1:])
            results.append({"mib": size, "median_s": median, "gbps": nbytes / median / 1e9})
        finally:
            parent.send("done")
            proc.join(timeout=10)
    return results


def _kv_target(conn, shape: tuple[int, ...], layers: int, device: str) -> None:
    import torch

    from vllm_pd.connector.transfer import KVTransport, regions_from_caches
    from vllm_pd import wire

    caches = [torch.arange(int(torch.tensor(shape).prod()), dtype=torch.float32, device=device).reshape(shape) + l
              for l in range(layers)]
    transport = KVTransport("kv-target", ["UCX"])
    transport.register(regions_from_caches(caches, shape[0], shape[2]))
    conn.send(wire.encode(transport.identity("target", 0)))
    conn.recv()  # the initiator finished its READ
    deadline = time.monotonic() + 5
    notices = []
    while not notices and time.monotonic() < deadline:
        notices = transport.notices()
    conn.send([wire.decode_notice(n) for n in notices])
    conn.recv()


def transport_check(device: str = "cpu", num_blocks: int = 64, layers: int = 4) -> dict:
    """Pull KV-shaped blocks between two processes through KVTransport and verify every byte."""
    import msgspec
    import torch

    from vllm_pd import wire
    from vllm_pd.connector.runs import merge_runs
    from vllm_pd.connector.transfer import KVTransport, regions_from_caches

    shape = (num_blocks, 2, 32, 2 * 64)  # blocks, kv heads, block size, K and V of head dim 64
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_kv_target, args=(child, shape, layers, device), daemon=True)
    proc.start()
    try:
        reply = msgspec.msgpack.decode(parent.recv(), type=wire.HandshakeReply)
        caches = [torch.zeros(shape, dtype=torch.float32, device=device) for _ in range(layers)]
        transport = KVTransport("kv-initiator", ["UCX"])
        transport.register(regions_from_caches(caches, num_blocks, shape[2]))
        t0 = time.time()
        peer = transport.add_peer(reply, t0, time.time())
        local, remote = [3, 4, 5, 9, 10, 20], [40, 41, 42, 7, 8, 0]
        runs = merge_runs(local, remote)
        notice = wire.encode(wire.PullNotice("done", "req-1", "inc"))
        pull = transport.read(peer, runs, expires=time.time() + 10)
        state = "PROC"
        while state == "PROC":
            state = transport.poll(pull)
        transport.notify(peer, notice)
        parent.send("read")
        notices = parent.recv()
        source = [torch.arange(int(torch.tensor(shape).prod()), dtype=torch.float32).reshape(shape) + l
                  for l in range(layers)]
        ok = all(torch.equal(caches[l][lb].cpu(), source[l][rb]) for l in range(layers) for lb, rb in zip(local, remote))
        untouched = all(int(caches[l][1].abs().sum()) == 0 for l in range(layers))
        return {"device": device, "mem_type": transport.kv.mem_type, "state": state, "bytes": pull.nbytes,
                "runs": len(runs), "descriptors": pull.descriptors, "data_ok": ok, "others_untouched": untouched,
                "notice": [msgspec.to_builtins(n) for n in notices]}
    finally:
        parent.send("bye")
        proc.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--check", action="store_true", help="also check the transfer layer on KV-shaped memory")
    args = parser.parse_args(argv)
    out = {"ceiling": raw_ceiling(args.sizes_mib, args.device)}
    if args.check:
        out["transport_check"] = transport_check(args.device)
    print(json.dumps(out, indent=2))
    ok = not args.check or (out["transport_check"]["data_ok"] and out["transport_check"]["others_untouched"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
