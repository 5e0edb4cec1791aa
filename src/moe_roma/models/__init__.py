"""Model loading, MoE router discovery, and router checkpoints."""

from moe_roma.models.discovery import MoEInfo, RouterInfo, discover_routers
from moe_roma.models.loading import load_model

__all__ = ["MoEInfo", "RouterInfo", "discover_routers", "load_model"]
