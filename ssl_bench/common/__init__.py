"""Small utilities every layer may use: progress bars, experiment trackers, the CPU kernel path, the policy for
unreadable records (skip with a warning, or strict). Imports nothing of ssl_bench but errors."""
