"""Catalogs shipped with intake-clms (mapped from the top-level catalogs/ folder)."""
