"""Local stand-ins for Azure services that speak the documented wire protocols.

Each fake is a real server on 127.0.0.1 (HTTPS where the SDK insists on TLS), driven by the
real Azure SDK clients the pipeline uses; nothing here patches an SDK method.
"""
