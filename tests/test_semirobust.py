"""Paper 003's split and frozen f_a, Algorithm 1's stopping rule and bookkeeping, layer outputs and rho."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layerbound.models import registry as models
from layerbound.core import seeds
from layerbound.core.errors import CheckpointMismatch
from layerbound.semirobust.mutual_info import class_conditional_mi
from layerbound.semirobust.algorithm import RetrainOptions, retrain_semirobust, train_f_b_epoch
from layerbound.semirobust.attacks import PGDAttack, adversarial_accuracy, paper_iterations
from layerbound.semirobust.layer_mi import layer_mi, layer_outputs
from layerbound.semirobust.split import f_a_changes, f_a_state, f_b_parameters, freeze_f_a, load_f_b, split_after, split_last, train_mode

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 16, 16)   # the smallest input cnn4's two VALID 5x5 convs and pools accept, rounded up
ATTACK = PGDAttack("linf", eps=0.1, steps=3)


def tiny_data(n, seed):
    """Two classes: a bright 6x6 square top-left (0) or bottom-right (1) on noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.3 * torch.rand(n, *SHAPE, generator=g)
    x[y == 0, :, 2:8, 2:8] += 0.6
    x[y == 1, :, 8:14, 8:14] += 0.6
    return x.clamp(0, 1), y


def build(arch, seed):
    torch.manual_seed(seed)
    return models.build(arch, SHAPE, 2)


def fit(net, x, y, epochs, attack=None, lr=0.05):
    """A plain (or PGD) training loop for the test's 'regular' and 'robust' networks."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        for i in range(0, len(x), 32):
            xb, yb = x[i:i + 32], y[i:i + 32]
            if attack is not None:
                net.eval()
                xb = attack(net, xb, yb)
            net.train()
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def test_split_counts_weight_layers_from_the_end():
    net = build("medium", 0)   # conv1..conv4, fc5, fc6, logits: seven weight layers
    split = split_last(net, 3)
    assert split.f_a_taps == ("conv1", "conv2", "conv3", "conv4")
    assert split.f_b_taps == ("fc5", "fc6", "logits")
    assert split == split_after(net, "conv4")
    assert split.layer_pairs() == [("conv4", "fc5"), ("fc5", "fc6"), ("fc6", "logits")]
    # cnn4's batch norm is no weight layer: its last 3 weight layers are conv2, fc3, logits.
    assert split_last(build("cnn4", 0), 3).f_b_taps == ("conv2", "fc3", "logits")
    for k in (0, 7):
        with pytest.raises(ValueError, match="f_b cannot be its last"):
            split_last(net, k)
    with pytest.raises(ValueError, match="cannot split medium after 'logits'"):
        split_after(net, "logits")


@pytest.mark.parametrize("k", [2, 3])
def test_f_a_weights_and_batchnorm_statistics_stay_bit_identical(k):
    # cnn4: conv-BN-ReLU-pool twice, fc3, logits. k = 2 freezes both BN layers; k = 3 trains the second.
    x, y = tiny_data(96, seed=1)
    net = build("cnn4", 2)
    split = split_last(net, k)
    before_a = f_a_state(net, split)
    before_b = {n: p.detach().clone() for n, p in net.named_parameters()}
    bn2_before = net.pre[1][1].running_mean.clone()
    freeze_f_a(net, split)
    optimizer = torch.optim.SGD(f_b_parameters(net, split), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(2):
        train_f_b_epoch(net, split, optimizer, x, y, ATTACK, 32, torch.Generator().manual_seed(0))
    assert any("running_mean" in key for key in before_a) and any("num_batches_tracked" in key for key in before_a)
    assert f_a_changes(net, split, before_a) == []
    f_b_keys = [n for n, _ in net.named_parameters() if int(n.split(".")[1]) >= split.a]
    assert all(not torch.equal(before_b[n], dict(net.named_parameters())[n]) for n in f_b_keys)
    # f_b's own batch norm (k = 3: conv2's) does learn its statistics.
    assert torch.equal(net.pre[1][1].running_mean, bn2_before) == (k == 2)


def test_the_check_sees_batchnorm_statistics_move_in_train_mode():
    # The negative control: one forward pass with f_a in train mode changes its running statistics.
    x, _ = tiny_data(32, seed=3)
    net = build("cnn4", 4)
    split = split_last(net, 2)
    before = f_a_state(net, split)
    train_mode(net, split)
    net(x)
    assert f_a_changes(net, split, before) == []
    net.train()
    net(x)
    assert "pre.0.1.running_mean" in f_a_changes(net, split, before)


def test_load_f_b_copies_only_f_b():
    robust, regular = build("cnn4", 5), build("cnn4", 6)
    split = split_last(robust, 3)
    target = copy.deepcopy(robust)
    load_f_b(target, regular, split)
    for key, value in target.state_dict().items():
        source = regular if int(key.split(".")[1]) >= split.a else robust
        assert torch.equal(value, source.state_dict()[key]), key
    with pytest.raises(CheckpointMismatch, match="cannot take f_b from a small network"):
        load_f_b(target, build("small", 0), split)


def test_layer_outputs_are_the_taps_features():
    x, _ = tiny_data(20, seed=7)
    net = build("cnn4", 8).eval()
    outputs = layer_outputs(net, x, ["conv2", "fc3", "logits"], batch_size=7)
    with torch.no_grad():
        for tap in ("conv2", "fc3", "logits"):
            np.testing.assert_allclose(outputs[tap], net.features(x, tap).double().numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(KeyError, match="no tap 'fc9'"):
        layer_outputs(net, x, ["fc9"])


def test_layer_mi_is_eq_5_for_each_consecutive_pair():
    x, y = tiny_data(200, seed=9)
    net = build("fcnn_smaller", 10).eval()   # fc1, fc2, logits
    split = split_last(net, 2)
    values = layer_mi(net, split, x, y, estimator="ksg", seed=4)
    assert list(values) == ["fc2", "logits"]   # rho_{a+1} = I(fc1; fc2 | y), rho_n = I(fc2; logits | y)
    h = layer_outputs(net, x, ["fc1", "fc2", "logits"])
    expected = class_conditional_mi(h["fc2"], h["logits"], y.numpy(), "ksg", seed=seeds.derive("4/mi/logits"))
    assert values["logits"] == expected.value
    assert values["fc2"] > 0.1   # fc2 is a function of fc1: strongly dependent


def test_paper_iteration_rule():
    # Paper 003, Section 3.1: min(4 + eps, 1.25 eps) iterations, "10, 20, and 36" at 8, 16, 32 / 255.
    assert [paper_iterations(e / 255) for e in (8, 16, 32)] == [10, 20, 36]


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    x_train, y_train = tiny_data(128, seed=11)
    x_test, y_test = tiny_data(64, seed=12)
    regular = fit(build("fcnn_smaller", 13), x_train, y_train, epochs=3)
    robust = fit(build("fcnn_smaller", 14), x_train, y_train, epochs=3, attack=ATTACK)
    return robust, regular, (x_train, y_train), (x_test, y_test)


def run(trained, k, trials=2, epochs=3, mi=None):
    robust, regular, train, test = trained
    options = RetrainOptions(trials=trials, epochs=epochs, k=k, lr=0.02, batch_size=32)
    return retrain_semirobust(robust, regular, split_last(robust, 2), train, test, ATTACK, ATTACK, options,
                      seed=3, mi=mi, progress=False)


def test_algorithm1_bookkeeping_and_determinism(trained):
    robust, regular, _, (x_test, y_test) = trained
    states = [copy.deepcopy(net.state_dict()) for net in (robust, regular)]
    seen = []

    def fake_mi(net, split, x_adv, y):
        # The adversarial test inputs reach the MI step: the test set, within the budget.
        assert x_adv.shape == x_test.shape and torch.equal(y, y_test)
        assert (x_adv - x_test).abs().max() <= ATTACK.eps + 1e-6
        seen.append(float(sum(p.detach().sum() for p in f_b_parameters(net, split))))
        return {"fc2": seen[-1], "logits": -seen[-1]}

    never = run(trained, k=-1.0, trials=3, mi=fake_mi)   # Acc* - Acc <= -1 is impossible
    assert [len(t.accuracies) for t in never.trials] == [3, 3, 3] and not any(t.reached for t in never.trials)
    assert never.best_accuracy == max(t.accuracy for t in never.trials)
    assert never.trials[never.best].accuracy == never.best_accuracy
    assert never.difference == never.best_accuracy - never.acc_star
    assert never.rho == {"fc2": min(seen), "logits": -max(seen)}
    assert never.rho_best == never.trials[never.best].mi
    # The best trial's network: f_a* bit for bit, f_b retrained away from the regular network's.
    best = copy.deepcopy(robust)
    best.load_state_dict(never.best_state)
    assert f_a_changes(best, never.split, f_a_state(robust, never.split)) == []
    assert not torch.equal(best.pre[2].weight, regular.pre[2].weight)
    torch.manual_seed(seeds.derive("3/semirobust/eval"))
    assert adversarial_accuracy(best, x_test, y_test, ATTACK)[0] == never.best_accuracy
    # Acc* and Acc_sr are the attack's accuracies of the robust network and of (f_a*, f_b).
    torch.manual_seed(seeds.derive("3/semirobust/eval"))
    assert never.acc_star == adversarial_accuracy(robust, x_test, y_test, ATTACK)[0]
    composite = copy.deepcopy(robust)
    load_f_b(composite, regular, never.split)
    torch.manual_seed(seeds.derive("3/semirobust/eval"))
    assert never.acc_sr == adversarial_accuracy(composite, x_test, y_test, ATTACK)[0]
    # The inputs are untouched, and each trial depends on its own seed only.
    for net, state in zip((robust, regular), states):
        assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert run(trained, k=-1.0, trials=1).trials[0].accuracies == never.trials[0].accuracies


def test_algorithm1_stops_at_the_first_epoch_meeting_the_criterion(trained):
    never = run(trained, k=-1.0)
    always = run(trained, k=1.0)                              # Acc* - Acc <= 1 always holds
    assert [t.accuracies for t in always.trials] == [t.accuracies[:1] for t in never.trials]
    assert all(t.reached for t in always.trials)
    for t, trial in enumerate(never.trials):
        # k such that epoch e meets the criterion exactly: the run stops at the first epoch that does.
        for target in sorted(set(trial.accuracies)):
            k = never.acc_star - target
            first = next(e for e, acc in enumerate(trial.accuracies) if never.acc_star - acc <= k)
            stopped = run(trained, k=k).trials[t]
            assert stopped.accuracies == trial.accuracies[:first + 1] and stopped.reached


def test_algorithm1_keeps_batchnorm_f_a_of_cnn4():
    # The driver on a BatchNorm network: the best trial's f_a* (weights, running statistics, batch
    # counts) is the robust network's, bit for bit; f_b's batch norm (conv2's, f_b = last 3) moved.
    x, y = tiny_data(64, seed=15)
    robust = fit(build("cnn4", 16), x, y, epochs=1, attack=ATTACK)
    regular = fit(build("cnn4", 17), x, y, epochs=1)
    split = split_last(robust, 3)
    result = retrain_semirobust(robust, regular, split, (x, y), tiny_data(32, seed=18), ATTACK, ATTACK,
                        RetrainOptions(trials=1, epochs=1, k=-1.0, batch_size=32), mi=None, progress=False)
    best = copy.deepcopy(robust)
    best.load_state_dict(result.best_state)
    assert f_a_changes(best, split, f_a_state(robust, split)) == []
    assert not torch.equal(best.pre[1][1].running_mean, regular.pre[1][1].running_mean)
    assert result.trials[0].mi == {} and result.rho == {}
