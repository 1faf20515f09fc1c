"""The HTTP edge: Backend.AI manager API routes over the services. Only api/app.py names concrete adapters."""
