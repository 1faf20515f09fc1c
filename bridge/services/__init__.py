"""Domain services: the use cases. They take adapters through their Protocols and own transactions."""
