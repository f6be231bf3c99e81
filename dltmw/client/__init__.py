"""Client SDK: a signing identity talking to a gateway."""

from dltmw.client.gateway import GatewayClient, Submitted

__all__ = ["GatewayClient", "Submitted"]
