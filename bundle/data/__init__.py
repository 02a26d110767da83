"""Data side of the bundle: DICOM decoding, dataset adapters, splits, sampling and synthetic demo data."""
