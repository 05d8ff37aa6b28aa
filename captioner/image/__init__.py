"""Image files in, RGB pictures out: loading, checks and preprocessing."""
