"""Running bundle workflows: locating the bundle, evaluators that survive a bad case."""
