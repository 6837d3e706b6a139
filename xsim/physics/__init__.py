"""Physics data and models: element tables, materials, HU calibration and X-ray spectra."""
