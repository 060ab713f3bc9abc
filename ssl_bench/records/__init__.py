"""Run records, the bottom of what a run leaves: reading and writing them atomically, what a run is (identity,
configuration id, labels in words), the results folder's layout and budget fingerprints. Imports configuration and
common only: never a statistic, never the loop."""
