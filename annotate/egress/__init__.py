"""The review server's egress guard (sitecustomize.py, loaded by its Python processes; never imported here)."""
