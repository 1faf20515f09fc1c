"""Storage: the folder file helper (run as a user on the login node) and its adapter."""
