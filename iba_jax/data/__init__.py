"""Data: the TFDS builders and the preprocessing from files to model inputs.

* ``preprocess``: PNG/JPEG/DICOM decoding, resizing, boxes, normalisation (numpy, no TFDS);
* ``nih``, ``brixia``: offline builders of NIH ChestX-ray14 and BrixIA over a downloaded folder;
* ``phantoms``: the generated cxr_phantoms set with pixel-exact ground truth;
* ``splits``: deterministic patient-wise splits;
* ``building``: build a set and read it back as numpy (``build``, ``data_source``,
  ``numpy_batches``).

Importing this package is cheap; TFDS is imported by the builder modules only.
"""
