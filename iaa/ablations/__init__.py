"""The paper's ablations (Tables VII-XII, Figs. 3-14) as sweeps of training runs.

- :mod:`iaa.ablations.variants`: a sweep point as a variant name (``lam-0.2``) and its keys;
- :mod:`iaa.ablations.experiments`: each table and sweep figure as the points it reads;
- :mod:`iaa.ablations.tables`: stage ``ablation-table``; :mod:`iaa.ablations.sweeps`: stage
  ``sweep-figure``. The class-level figures are :mod:`iaa.class_figures`; the embedding
  figures :mod:`iaa.similarity_histogram` (Fig. 12), :mod:`iaa.visualize` (Fig. 13) and
  :mod:`iaa.tsne` (Fig. 14).
"""
