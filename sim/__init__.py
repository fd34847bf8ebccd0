"""A simulated AI training cluster with fault injection: Vigil's default data source."""
