"""Evaluation of EoMT models: the metrics (mIoU, PQ, COCO mask AP) and `eomt eval` (`evaluate`).

Uses the predictor, the data readers and the job machinery (shards, processes); never imports training/ or
cli/ (training calls evaluation, not the other way round).
"""
