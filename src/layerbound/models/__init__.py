"""The models: `specs` (a config's models as the dataclasses training and import take),
`architectures` (networks as data: taps and widths, no torch), `registry` (the registry's networks
with named taps), `sources` and `loaded` (torchvision, python and RobustBench models; `sources` also
checks a loaded model's config entry), `weights` (reading and checking a weights file), `zoo`
(whether a RobustBench entry can load), `importer` (the import job), `checkpoint`, `train` and
`adversary` (training's inner maximizations, PGD and TRADES)."""
