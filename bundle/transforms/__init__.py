"""Chest X-ray transforms: lung-field mask and square lung crop, zone-aware horizontal flip, label packing."""
