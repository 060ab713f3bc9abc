"""ssl_bench: a self-supervised-learning benchmark suite. From Python, ``ssl_bench.api``::

    from ssl_bench import api
    summary = api.run(["method=swav", "budget=smoke"])

(``ssl_bench.run``, ``ssl_bench.compare`` and ``ssl_bench.evaluate`` are the entry-point modules, so the API lives
in its own module; importing ``ssl_bench`` itself stays cheap: no torch, no Hydra.)
"""
