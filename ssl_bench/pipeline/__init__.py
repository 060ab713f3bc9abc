"""One ordinary run: resolved config -> data -> model -> training loop -> final evaluation -> record
(ssl_bench.pipeline.experiment), used by every entry point, the sweep and the verification of shipped records.
Imports training and everything below it; never analysis."""
