"""The data: `info` (datasets' shapes and class counts, what planning needs without loading
anything), `datasets` (the pixels) and `pairs` (the sampled pair sets)."""
