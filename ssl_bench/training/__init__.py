"""The shared training loop and its parts: the Accelerate step loop (loop.py), its epoch-end hooks (hooks.py),
checkpoint storage (checkpoint.py), signals, multi-crop, optimisers, SyncBN, health measurements. Imports evaluation,
models, methods, data, records, configuration and the shared ops; never the pipeline or analysis."""
