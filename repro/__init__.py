"""repro: the `repro` CLI, sweep planning, the results store, executors, aggregates and tracking."""
