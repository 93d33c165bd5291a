"""Names shared by every stage. Model `input` is the input-space baseline, with two layers: `input`
(no projection, d = ||x - x'||/2) and `input_rp` (the input projected to m dimensions)."""

INPUT_MODEL = "input"
INPUT_LAYERS = ("input", "input_rp")
