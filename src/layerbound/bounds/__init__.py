"""The bounds: conflict graphs from collision distances, the optimal cross-entropy (max-flow) and
0-1 losses, loss tables, the FAB curve they are compared with, and the papers' claims tested on
them with paired-bootstrap statistics."""
