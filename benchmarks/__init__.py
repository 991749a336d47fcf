"""bridge_xr benchmarks: ratios against named baselines measured in the same run."""
