"""The inference layer: predictions per recording (``predict``) and stage 03 (``infer``)."""
