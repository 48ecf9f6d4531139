"""The metric set of the contract and its lock-free cells."""
