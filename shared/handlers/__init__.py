"""ignite handlers: crash-safe training state, best weights, progress."""
