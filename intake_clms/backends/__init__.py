"""Service backends for the preload lifecycle (imported only when a read needs them)."""
