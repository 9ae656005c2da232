"""dicomnode: a PACS-integrated DICOM node that receives, stores durably, analyses and returns SEG and SR."""

import logging

from dicomnode.errors import ConfigError, DicomnodeError

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["ConfigError", "DicomnodeError", "__version__"]
