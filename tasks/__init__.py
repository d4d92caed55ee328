"""Task suites: one module per suite; a task is a protocol on a dataset with a main metric."""
