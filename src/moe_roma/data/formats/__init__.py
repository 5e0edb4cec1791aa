"""One module per file format; ``moe_roma.data.loaders`` registers them and detects which is which."""
