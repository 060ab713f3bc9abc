"""Shared operations of the objectives, the data and the loop: collectives that are a no-op on one process and the log-
domain Sinkhorn. Imports nothing of ssl_bench but errors."""
