"""What runs inside a session's container: the kernel runner (stdlib only; it runs on the image's Python)."""
