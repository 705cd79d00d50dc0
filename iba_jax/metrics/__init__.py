"""Evaluation metrics of attribution maps.

* ``faithfulness``: insertion/deletion curves and AUCs, Sensitivity-N;
* ``localisation``: IoU with boxes and masks after binarising, pointing game, mass inside,
  lung zones;
* ``correlation``: Pearson correlation of a map with a per-pixel severity map, and its
  random-map control;
* ``intervals``: a mean with its confidence interval (Student's t);
* ``paired``: two methods on the same cases: the mean difference with a bootstrap interval,
  and the sign test.

Maps are ``(N, H, W)`` arrays, one per image, larger = more important.
"""
