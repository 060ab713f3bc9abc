"""The networks every objective shares: backbones, the projection head and the model that joins them to an objective.
Imports the objective interface (ssl_bench.methods.base)."""
