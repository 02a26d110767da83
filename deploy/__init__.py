"""MONAI Deploy application: a chest-radiograph DICOM study in, a DICOM Comprehensive SR and a JSON summary out.

Runs in its own environment (``.venv-deploy``, ``make deploy-venv``): the MONAI Deploy App SDK, once installed,
changes what ``import monai`` loads, so it is kept away from the training environment. See docs/deploy.md.
"""
