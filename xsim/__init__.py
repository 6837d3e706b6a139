"""xsim: X-ray simulation from CT for machine learning and medical physics.

Public surface (see README.md): materials, spectra, volumes, geometry, projector, Monte Carlo,
scatter model, detector, datasets and the ``xsim`` command line.
"""
__version__ = "0.1.0"
