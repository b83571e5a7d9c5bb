"""Feature towers for users and items: one encoder per feature kind, a network on top.

=========  ================================================  =====================
kind       encoder                                           file
=========  ================================================  =====================
id         embedding of the entity's own index               ``categorical.py``
token      embedding, or one-hot for small cardinalities     ``categorical.py``
token_seq  mean of the tokens' embeddings                    ``bag.py``
history    mean / sum / max of the items' embeddings         ``bag.py``
float      standardised value + missing flag, or bucket      ``numeric.py``
float_seq  linear map of the standardised padded values      ``numeric.py``
text       the DSSM tower on letter trigrams                 ``text.py``
=========  ================================================  =====================

:class:`~twotower.towers.features.tower.FeatureTower` concatenates the encodings and runs an
MLP, a DCN-v2 (``dcn.py``) or nothing (an ID embedding alone is matrix factorisation).
"""
