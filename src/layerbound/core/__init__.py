"""The lowest stage: errors, seeds, atomic file writes, the results folder's layout (paths), devices,
threads and the config schema (`schema`: package data `config.schema.yaml`, its defaults). Nothing
here imports another stage of layerbound."""
