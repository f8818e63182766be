"""qkd_circuits."""
