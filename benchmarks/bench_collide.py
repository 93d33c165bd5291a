"""Benchmark of the collision engine (issue 3); prints ratios measured in one run.

1. Throughput, pair-iterations per second, of the batched engine (layerbound.collide.jacobian.search as the
   shards run it) against a straightforward per-pair implementation of the same Algorithm 1 (a
   Python loop over pairs, Jacobians from torch.autograd.functional.jacobian), on Medium CNN taps
   conv2, fc5 and logits, m = 10, the same number of iterations for both (tol = 0, so no pair
   stops early). The per-pair loop is slow, so it runs on fewer pairs; both are normalized per
   pair-iteration.
2. Overhead: the marginal time of one search iteration over the time of one forward plus m
   backward passes of g = A f_j on the same batch (the Jacobian work any method needs).
3. Peak memory per pair of one search on the Medium CNN with 3x32x32 inputs (CIFAR shape), each
   batch size in a fresh subprocess (peak RSS over the RSS before the search, slope between two
   batch sizes), with 1 Jacobian row per backward pass (the CPU default) and all m (the GPU
   default), and the largest batch that fits in 24 GiB.

    python benchmarks/bench_collide.py [--pairs 256] [--baseline-pairs 16] [--iterations 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from layerbound.collide import features, projection
from layerbound.models import registry as models
from layerbound.collide import jacobian

M = 10
TAPS = ("conv2", "fc5", "logits")


def medium(input_shape=(1, 28, 28)) -> models.TappedNet:
    torch.manual_seed(0)
    return models.build("medium", input_shape, 10).eval()


def pairs(n: int, shape, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.rand(n, *shape, generator=g)


def per_pair_search(g, x: torch.Tensor, x_prime: torch.Tensor, iterations: int, alpha=1.0, gamma=0.7) -> None:
    """Algorithm 1 for one pair at a time, the straightforward way: full Jacobians per point."""
    for k in range(len(x)):
        x_k, x_prime_k = x[k:k + 1], x_prime[k:k + 1]
        x_tilde = x_tilde_prime = (x_k + x_prime_k) / 2
        a = alpha
        for _ in range(iterations):
            J = torch.autograd.functional.jacobian(g, x_tilde).reshape(M, -1)
            J_prime = torch.autograd.functional.jacobian(g, x_tilde_prime).reshape(M, -1)
            with torch.no_grad():
                r = (g(x_tilde_prime) - g(x_tilde)).reshape(M)
            p = ((1 - a) * x_tilde + a * x_k).reshape(-1)
            p_prime = ((1 - a) * x_tilde_prime + a * x_prime_k).reshape(-1)
            c = r + J_prime @ (p_prime - x_tilde_prime.reshape(-1)) - J @ (p - x_tilde.reshape(-1))
            y = torch.linalg.solve(J @ J.T + J_prime @ J_prime.T, c)
            x_tilde = (p + J.T @ y).reshape(x_k.shape)
            x_tilde_prime = (p_prime - J_prime.T @ y).reshape(x_k.shape)
            a *= gamma


def engine(net: models.TappedNet, tap: str):
    """f_j and A as the shard runner prepares them (eval, no parameter gradients, channels-last on CPU)."""
    device = torch.device("cpu")
    net = features.prepare_model(net, torch.float32, device)
    f = features.feature_map(net, tap, device)
    A = projection.draw(0, "bench", tap, M, 0, net.tap_widths()[tap])
    return f, A


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def throughput(args) -> None:
    print(f"\n1. Throughput, pair-iterations/s (m={M}, {args.iterations} iterations per pair, tol=0; "
          f"engine on {args.pairs} pairs in batches of {args.batch}, per-pair loop on {args.baseline_pairs} pairs)")
    print("(engine: the default, rows_per_pass=1 on CPU; engine-vmap-m: all m rows in one vmapped backward)")
    print(f"{'tap':8} {'n_j':>6} {'engine':>10} {'engine-vmap-m':>14} {'per-pair':>10} {'ratio':>7}")
    for tap in TAPS:
        net = medium()
        plain = net.extractor(tap).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        A = projection.draw(0, "bench", tap, M, 0, net.tap_widths()[tap])
        g_plain = plain if A is None else (lambda u: plain(u) @ A.T)  # noqa: E731
        x, x_prime = pairs(args.baseline_pairs, net.input_shape)
        per_pair_s = timed(lambda: per_pair_search(g_plain, x, x_prime, args.iterations))
        baseline = args.baseline_pairs * args.iterations / per_pair_s

        f, A = engine(medium(), tap)
        x, x_prime = pairs(args.pairs, net.input_shape)
        jacobian.search(f, A, x[:4], x_prime[:4], step="decay", max_iter=1, tol=0.0)           # warm-up
        engine_s = timed(lambda: jacobian.search(f, A, x, x_prime, step="decay", max_iter=args.iterations, tol=0.0,
                                                batch_size=args.batch))
        batched = args.pairs * args.iterations / engine_s
        vmap_s = timed(lambda: jacobian.search(f, A, x, x_prime, step="decay", max_iter=args.iterations, tol=0.0,
                                              batch_size=args.batch, rows_per_pass=M))
        vmapped = args.pairs * args.iterations / vmap_s
        print(f"{tap:8} {net.tap_widths()[tap]:6d} {batched:10.1f} {vmapped:14.1f} {baseline:10.1f} "
              f"{batched / baseline:6.1f}x")


def overhead(args) -> None:
    print(f"\n2. Overhead: one search iteration / (one forward + {M} backward passes of A f_j), "
          f"batch of {args.batch} pairs = {2 * args.batch} points; an iteration is the whole search's time / "
          f"{args.iterations} (so it also carries the first forward and the final verification)")
    print(f"{'tap':8} {'iteration':>10} {'fwd+m bwd':>10} {'ratio':>7}")
    for tap in TAPS:
        f, A = engine(medium(), tap)
        x, x_prime = pairs(args.batch, (1, 28, 28))
        g = f if A is None else (lambda u: f(u) @ A.T)  # noqa: E731
        u = torch.cat([x, x_prime]).requires_grad_(True)

        def forward_and_backwards():
            out = g(u)
            for k in range(M):
                cotangent = torch.zeros_like(out)
                cotangent[:, k] = 1
                torch.autograd.grad(out, u, cotangent, retain_graph=k < M - 1)

        def search():
            jacobian.search(f, A, x, x_prime, step="decay", max_iter=args.iterations, tol=0.0)
        forward_and_backwards()
        search()
        reference, iteration = float("inf"), float("inf")
        for _ in range(3):   # interleaved, best of 3: the machine's load changes minute to minute
            reference = min(reference, timed(forward_and_backwards))
            iteration = min(iteration, timed(search) / args.iterations)
        print(f"{tap:8} {iteration:9.3f}s {reference:9.3f}s {iteration / reference:6.2f}")


def _current_rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _peak_rss_child(batch: int, tap: str, threads: int, rows_per_pass: int | None = None) -> None:
    """In a fresh process: peak RSS of one 2-iteration search on 3x32x32 inputs, over the RSS before it."""
    torch.set_num_threads(threads)
    f, A = engine(medium((3, 32, 32)), tap)
    x, x_prime = pairs(batch, (3, 32, 32))
    before = _current_rss_kib()
    jacobian.search(f, A, x, x_prime, step="decay", max_iter=2, tol=0.0, rows_per_pass=rows_per_pass)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"kib": after - before}))


def memory(args) -> None:
    small, large = 128, 512
    print(f"\n3. Peak memory of a search, Medium CNN on 3x32x32, m={M} (peak RSS over the RSS before the search, "
          f"batches of {small} and {large} pairs, slope per pair)")
    print(f"{'tap':8} {'rows/pass':>9} {'MiB/pair':>9} {'max batch in 24 GiB':>20}")
    for rows in (1, M):
        worst = 0.0
        for tap in ("conv1", "conv2", "fc5", "logits"):
            kib = {}
            for batch in (small, large):
                out = subprocess.run([sys.executable, __file__, "--_memory-child", str(batch), tap, str(args.threads),
                                      str(rows)], capture_output=True, text=True, check=True)
                kib[batch] = json.loads(out.stdout.strip().splitlines()[-1])["kib"]
            per_pair = (kib[large] - kib[small]) / (large - small) / 1024   # MiB
            if per_pair <= 0:   # the peak was set before the search (allocator noise): no estimate
                print(f"{tap:8} {rows:9d} {'n/a':>9} {'n/a':>20}")
                continue
            fixed = max(kib[small] / 1024 - small * per_pair, 0)
            worst = max(worst, per_pair)
            print(f"{tap:8} {rows:9d} {per_pair:9.2f} {int((24 * 1024 - fixed) / per_pair):20d}")
        if worst > 0:
            print(f"worst tap with {rows} row(s) per pass: {worst:.2f} MiB per pair -> "
                  f"{int(24 * 1024 / worst)} pairs per 24 GiB")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_memory-child":
        _peak_rss_child(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else None)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--baseline-pairs", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64, help="pairs per engine batch")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "overhead", "memory"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    if "throughput" not in args.skip:
        throughput(args)
    if "overhead" not in args.skip:
        overhead(args)
    if "memory" not in args.skip:
        memory(args)


if __name__ == "__main__":
    main()
