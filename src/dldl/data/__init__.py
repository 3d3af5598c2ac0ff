"""Data: label-file readers (``sources``), image decoding (``images``), the decoded uint8 cache
(``cache``) and batched torch augmentation (``augment``)."""
