"""The evaluation layer: metrics, reports, ensembling (stage 04)."""
