"""Layer-by-layer lower bounds for a model you bring: load, pick a layer, sample pairs, search
collisions, compute the loss curve, plot it (layerbound's Python API, README "Python API").

The model is a torchvision ResNet-18 adapted to 1x28x28 inputs (`small_inputs`), with random
weights written to a local file first: layerbound never downloads weights, so the example makes
its own. Replace `weights` with your checkpoint's state_dict file to analyze a trained model.

    python examples/analyze_any_model.py --out results/example/resnet18_layer1

Runs offline on mnist5k (2 digits of each of the classes 3 and 7: 4 pairs) in well under a
minute on one CPU core and prints the optimal cross-entropy and 0-1 losses per budget eps.
"""

import argparse
import tempfile
from pathlib import Path

import torch

from layerbound import api
from layerbound.models import loaded

EPS = [0.0, 0.5, 1.0, 2.0, 3.0, 4.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="layer1", help="a layer name (see the printed list)")
    parser.add_argument("--per-class", type=int, default=2, help="S, digits of each class")
    parser.add_argument("--m", type=int, default=10, help="projection dimension")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="figure path without suffix (PNG and PDF)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    entry = {"source": "torchvision", "arch": "resnet18", "small_inputs": True,
             "normalization": {"mean": [0.1307], "std": [0.3081]}}
    with tempfile.TemporaryDirectory() as tmp:
        # Stand-in for your own checkpoint: the adapted architecture's state_dict, random weights.
        torch.manual_seed(0)
        weights = Path(tmp) / "resnet18_small_inputs.pt"
        torch.save(loaded.network({**entry, "dataset": "mnist5k"}, (1, 28, 28), 10, weights=False).state_dict(), weights)
        model = api.load_model({**entry, "weights": str(weights)}, dataset="mnist5k")

    widths = api.taps(model)
    print(f"{len(widths)} layers, e.g. " + ", ".join(f"{name} (n={widths[name]})" for name in
                                                    ("conv1", "maxpool", "layer1", "layer2", "layer4", "fc")))
    pairs = api.sample_pairs("mnist5k", classes=(3, 7), per_class=args.per_class, seed=0)
    found = api.collisions(model, args.layer, pairs, m=args.m, projections=1, max_iter=5, name="resnet18")
    print(f"{args.layer}: n_j = {found.n_j}, m = {found.m}, mean distance {float(found.distances.mean()):.4f} "
          f"(midpoint bound {float(found.midpoint_bounds.mean()):.4f}), adversary {found.adversary}")
    curve = api.loss_curve(found, EPS, bootstrap=0)
    baseline = api.loss_curve(api.input_distances(pairs), EPS, bootstrap=0)
    for eps, ce, zero_one in zip(curve["eps"], curve["ce_mean"], curve["zero_one_mean"]):
        print(f"eps = {eps:g}: optimal cross-entropy loss {ce:.4f}, 0-1 loss {zero_one:.4f}")
    if args.out:
        api.plot_loss_curves({args.layer: curve, "input": baseline}, model="resnet18_random", dataset="mnist5k",
                             m=args.m, arch="resnet18", path=args.out)
        print(f"wrote {args.out}.png and {args.out}.pdf")


if __name__ == "__main__":
    main()
