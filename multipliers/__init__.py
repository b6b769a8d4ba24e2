"""C sources of the shipped approximate multipliers (installed as axkern._multipliers)."""
