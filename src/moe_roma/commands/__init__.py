"""Sub-commands of ``roma``: one module each, discovered by ``moe_roma.cli``."""
