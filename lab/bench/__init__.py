"""``lab bench``: how fast the lab knows, what evidence and the fixes cost, how it scales."""
