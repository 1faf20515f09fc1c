"""pydantic models of the Backend.AI JSON the clients send, one module per API group."""
