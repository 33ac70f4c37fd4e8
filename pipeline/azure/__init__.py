"""Clients for the Azure services the pipeline talks to (storage, Log Analytics, Synapse, ARM)."""
