"""One module per comparison; each has ``run(workspace) -> list[Figure]``."""
