"""The evaluation attacks: `info` (the registry as data: names, norms, the pinned library; no torch)
and `evaluate` (running them through torchattacks, checking every output, robust-accuracy tables,
FAB on the pair set)."""
