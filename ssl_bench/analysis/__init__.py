"""Analysis: what the records say. Grouping runs into cells, statistics and decisions, tables, figures, claims, and
the verification of shipped records against today's code. Imports records, configuration and (for verification)
the run pipeline; nothing below imports it: the loop and the objectives never see a statistic."""
