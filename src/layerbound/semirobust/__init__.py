"""Paper 003's subnetwork study: `split` (the f_a / f_b split, f_a frozen), `algorithm`
(Algorithm 1's retraining of f_b), `attacks` (the study's attacks), `layer_mi` (rho of eq. 5),
`mutual_info` (EDGE and KSG estimators, in bits), `study` (one run of the workflow written as JSON)
and `table` (Table 1)."""
