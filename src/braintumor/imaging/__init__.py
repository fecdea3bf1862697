"""The imaging core, free of torch and of any server: image types, raster and DICOM reading, letterbox, overlay.

Why one package: the model's preprocessing, the API, batch scoring and the web UI must read a scan and draw its
heatmap the same way (one DICOM reader with one pixel cap and one windowing, one jet table, one blend), so they
all import it from here; the UI may import this package and nothing else of ``braintumor``.
"""
