"""The lowest stage: errors, seeds, atomic file writes, devices, threads and the config schema
(package data, `config.schema.yaml`). Nothing here imports another stage of layerbound."""
