"""Papers 001 and 002's qualitative findings as claims.

Each claim (docs/claims.md, chosen before any was computed on real results) is one finding,
written so that the paper predicts a statistic > 0, or for a statement of equivalence one within
+-EQUIVALENCE_MARGIN of 0. Where a configuration can test them is the planner's
(layerbound.plan.claims); the statistics, intervals and verdicts are layerbound.bounds.claim_statistics'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CLAIMS", "EQUIVALENCE_MARGIN", "FAB_LOSSES", "Claim", "unit_name"]

EQUIVALENCE_MARGIN = 0.05 * math.log(2.0)   # nats of mean loss A (docs/claims.md, Verdicts)

# FAB's loss in claim 001_fab_above_collision (docs/claims.md, "FAB's loss"): "ce" is the two-class
# cross-entropy over the pair's classes, "ce_all" the model's cross-entropy over all its classes.
FAB_LOSSES = {"ce": "FAB loss: two-class cross-entropy over the pair's classes",
              "ce_all": "FAB loss: the model's cross-entropy over all its classes"}


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    where: str
    statement: str
    statistic: str
    needs: str                 # what a configuration must have to test it (the note of "not tested")
    equivalence: bool = False  # predicted near 0 rather than > 0


_AVG = "average step gain = (A(first) - A(last)) / (layers - 1)"
CLAIMS: dict[str, Claim] = {c.id: c for c in (
    Claim("001_distance_grows_with_depth", "001", "Sec. 4.3, Fig. 3",
          "as the feature extractor becomes deeper, the average adversarial distance increases",
          "D(last layer) - D(first layer)", "a model with >= 2 randomly projected layers (m < n_j)"),
    Claim("001_loss_falls_with_depth", "001", "Sec. 6.3, Figs. 8-9",
          "as we move through the layers, robustness increases; the optimal loss decreases",
          "A(first layer) - A(last layer)", "a model with >= 2 randomly projected layers (m < n_j)"),
    Claim("001_first_layer_weakest", "001", "Sec. 6.6, Figs. 8, 13, 14",
          "the first convolutional layer often learns less robust features even when the model as a whole is robust",
          "A(first layer) - max of A over the other layers", "a model with >= 2 randomly projected layers (m < n_j)"),
    Claim("001_large_first_step", "001", "Sec. 6.3",
          "a relatively large improvement from layer one to layer two",
          f"A(layer 1) - A(layer 2) - {_AVG}", "a model with >= 3 randomly projected layers"),
    Claim("001_large_conv_to_dense_step", "001", "Sec. 6.3",
          "a large improvement from layer four to layer five: a distinct gap between the convolutional and the fully "
          "connected layers", f"A(last conv layer) - A(first dense layer) - {_AVG}",
          "a registry CNN with conv and dense layers (>= 3 layers, randomly projected)"),
    Claim("001_little_gain_at_logits", "001", "Sec. 6.3, 6.6",
          "from layer six to the logits, not much robustness improvement despite the reduction from 512 to 10",
          f"{_AVG} - [A(layer before the logits) - A(logits)]", "a model with the logits and >= 3 layers"),
    Claim("001_benign_least_robust", "001", "Sec. 6.5-6.6, Fig. 13 vs 8",
          "benign training achieves very limited robustness; for robust models the optimal loss at the logit layer "
          "remains low", "A(benign, logits) - A(adversarially trained, logits)",
          "a benign and a PGD or TRADES model of one dataset and architecture, with the logits"),
    Claim("001_trades_cliff_earlier", "001", "Sec. 6.5, Fig. 14 vs 8",
          "TRADES have layer-one robustness cliffs at lower adversarial budgets than PGD",
          "E(PGD, first layer) - E(TRADES, first layer)",
          "a PGD and a TRADES model of one architecture, norm and budget, first layer randomly projected"),
    Claim("001_trades_fc_separation", "001", "Sec. 6.5, Fig. 14 vs 8",
          "TRADES achieves more separation between fully-connected layer curves",
          "spread(TRADES) - spread(PGD), spread = max - min of A over the dense layers (logits included)",
          "a PGD and a TRADES registry CNN of one norm and budget with >= 2 dense layers"),
    Claim("001_trades_more_robust", "001", "Sec. 6.5",
          "TRADES significantly outperforms plain PGD (robust test accuracy; tested at the logits)",
          "A(PGD, logits) - A(TRADES, logits)", "a PGD and a TRADES model of one architecture, norm and budget"),
    Claim("001_loss_falls_with_m", "001", "Sec. 6.2, Fig. 6",
          "as the projection dimension m increases, the loss decreases (first conv layer)",
          "A(layer, smallest m) - A(layer, largest m)", "a model with a layer searched at >= 2 m (collision.sweeps)"),
    Claim("001_small_cnn_less_robust", "001", "Sec. 6.4, Fig. 10 vs 8",
          "the small CNN exhibits lower overall robustness", "A(small, logits) - A(medium, logits)",
          "a small and a medium CNN of one dataset and training"),
    Claim("001_small_cnn_first_layer_better", "001", "Sec. 6.4, Fig. 10 vs 8",
          "the small CNN's first convolutional layer appears to perform better", "A(medium, conv1) - A(small, conv1)",
          "a small and a medium CNN of one dataset and training, conv1 randomly projected"),
    Claim("001_small_cnn_second_layer_similar", "001", "Sec. 6.4, Fig. 10 vs 8",
          "the small CNN's second layer achieves a similar level of robustness to that of the medium CNN",
          "A(small, conv2) - A(medium, conv2), equivalence", "a small and a medium CNN of one dataset and training, "
          "conv2 randomly projected", equivalence=True),
    Claim("unprojected_first_layer_as_input", "001, 002", "001 Sec. 6.3, Fig. 7; 002 Sec. 4.2, App. F.3, Fig. 11",
          "without projection, the initial layers' robustness measure remains essentially the same as at the input "
          "level; a linear convolutional layer does not increase the lower bound",
          "A(layer) - A(input), equivalence", "an unprojected first layer at least as wide as the input, and the "
          "input baseline at that m", equivalence=True),
    Claim("001_fab_above_collision", "001", "Sec. 6.1, Fig. 5a",
          "the FAB loss remains consistently higher than our collision-based loss",
          "min over the eps grid of [FAB cross-entropy - optimal collision cross-entropy at the logits]",
          "the FAB comparison of a model (attacks.fab_comparison)"),
    Claim("002_first_relu_raises_bound", "002", "Sec. 4.2, Figs. 3-4",
          "the first ReLU activation layer contributes significantly to an increase in the lower bound",
          "A(fc1) - A(fc1_pre)", "an FCNN searched unprojected at fc1_pre and fc1"),
    Claim("002_second_linear_adds_little", "002", "Sec. 4.2, Figs. 3-4",
          "the second linear layer does not lead to much additional increase in the loss",
          "[A(fc1) - A(fc1_pre)] - [A(fc2_pre) - A(fc1)]", "an FCNN searched unprojected at fc1_pre, fc1 and fc2_pre"),
    Claim("002_second_relu_raises_bound", "002", "Sec. 4.2, Figs. 3-4",
          "the second set of ReLU activations does have a measurable impact on robustness",
          "A(fc2) - A(fc2_pre)", "an FCNN searched unprojected at fc2_pre and fc2"),
    Claim("002_second_relu_larger_for_benign", "002", "Sec. 4.2, Figs. 3-4",
          "the second ReLU's impact is particularly large for the benign network",
          "[A(fc2) - A(fc2_pre)] of the benign model - the same of the adversarially trained one",
          "a benign and a PGD or TRADES FCNN searched unprojected at fc2_pre and fc2"),
    Claim("002_adversarial_more_robust_every_layer", "002", "Sec. 4.2, Figs. 2, 5",
          "layers extracted from robustly trained networks are more robust than their benign counterparts",
          "A(benign, layer) - A(adversarially trained, layer)",
          "a benign and a PGD or TRADES FCNN searched unprojected at a common layer"),
    Claim("002_larger_train_eps_more_robust", "002", "Sec. 4.2, Fig. 2",
          "first linear layer: robustness increases with the training budget eps_train",
          "A(lower eps_train, fc1_pre) - A(next higher eps_train, fc1_pre)",
          "FCNNs of one training method and norm at >= 2 budgets, searched unprojected at fc1_pre"),
    Claim("002_diminishing_returns_of_train_eps", "002", "Sec. 4.2, Fig. 2",
          "the marginal benefits of a larger training budget reduce as eps_train increases",
          "g(e1, e2) - g(e2, e3), g(a, b) = [A(a, fc1_pre) - A(b, fc1_pre)] / (b - a), consecutive budgets",
          "FCNNs of one training method and norm at >= 3 budgets, searched unprojected at fc1_pre"),
    Claim("002_pgd_trades_gap_fades", "002", "Sec. 4.2, Fig. 2 vs 5",
          "a significant PGD / TRADES difference at the first linear layer largely disappears by the second ReLU",
          "|A(PGD, fc1_pre) - A(TRADES, fc1_pre)| - |A(PGD, fc2) - A(TRADES, fc2)|",
          "a PGD and a TRADES FCNN of one norm and budget searched unprojected at fc1_pre and fc2"),
    Claim("002_narrower_less_robust", "002", "App. F.1, Fig. 6",
          "as the width of the feature extractor decreases, so does its robustness",
          "A(narrower, layer) - A(wider, layer)", "two FCNNs of one dataset and training whose layers differ only in "
          "width, searched unprojected at a common layer"),
    Claim("polytope_at_most_jacobian", "issue 27", "our two searches (not a paper statement)",
          "paper 002's polytope descent finds collisions at most as far as paper 001's Algorithm 1",
          "D(jacobian) - D(polytope), same model, layer and m", "a layer searched by both methods"),
)}


def unit_name(key: tuple) -> str:
    return "/".join(str(part) for part in key)
