"""One module per Backend.AI API group."""
