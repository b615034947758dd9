"""The control path: the policy model, its store, list sources, and compilation."""
