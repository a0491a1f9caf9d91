"""The layer table Darknet prints at load time, plus parameter count and total BFLOPs.

BFLOPs are pjreddie's: 2*multiply-adds of the convolutional, connected, local and recurrent
layers; the total is their sum, which is how pjreddie's published figures are computed."""


def layer_rows(net):
    rows = []
    for layer in net.layers:
        filters, size, inp, out = layer.describe()
        rows.append({"index": layer.index, "type": layer.type, "filters": str(filters),
                     "size": str(size), "input": inp, "output": out,
                     "bflops": layer.flops() / 1e9, "params": layer.weight_count()})
    return rows


def format_table(net):
    rows = layer_rows(net)
    lines = [f"{'layer':>5} {'type':<14} {'filters':>8} {'size':<14} {'input':>20}    "
             f"{'output':<20} {'BFLOPs':>8}"]
    for r in rows:
        bflops = f"{r['bflops']:8.3f}" if r["bflops"] else ""
        lines.append(f"{r['index']:5d} {r['type']:<14} {r['filters']:>8} {r['size']:<14} "
                     f"{r['input']:>20} -> {r['output']:<20} {bflops}".rstrip())
    total = sum(r["bflops"] for r in rows)
    params = sum(r["params"] for r in rows)
    lines.append(f"input {net.w} x {net.h} x {net.c}, batch {net.batch}, "
                 f"subdivisions {net.subdivisions}")
    lines.append(f"parameters: {params:,} ({params * 4 / 2**20:.2f} MiB of float32 weights)")
    lines.append(f"total BFLOPs: {total:.3f}")
    return "\n".join(lines)


def runtime_info():
    """What the forward pass runs on: numpy and its BLAS, the threads of a parallel region
    (parallel.py), the compiled kernels (kernels.py)."""
    import numpy as np
    from threadpoolctl import threadpool_info

    from . import kernels, parallel
    blas = [f"{d.get('internal_api')} {d.get('version')}" for d in threadpool_info()
            if d.get("user_api") == "blas"]
    return {"numpy": np.__version__, "blas": blas[0] if blas else "none found",
            "threads": parallel.worker_threads(), "kernels": kernels.status()}


def format_runtime(info):
    return (f"runtime: numpy {info['numpy']} ({info['blas']}), {info['threads']} threads, "
            f"compiled kernels: {info['kernels']}")
