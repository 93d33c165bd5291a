"""Paper 003's subnetwork study: `algorithm` (the f_a / f_b split, Algorithm 1's retraining of f_b,
the study's attacks, rho of eq. 5), `mutual_info` (EDGE and KSG estimators, in bits), `study` (one
run of the workflow written as JSON) and `table` (Table 1)."""
