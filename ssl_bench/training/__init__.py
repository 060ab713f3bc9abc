"""The shared training loop and its parts: the Accelerate step loop, multi-crop, optimisers, SyncBN, health
measurements. Imports evaluation, models, methods, data, records, configuration and the shared ops; never analysis."""
