"""Services: the layer between views and the engines (models, licensing, store)."""
