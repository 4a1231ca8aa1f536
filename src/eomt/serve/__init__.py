"""`eomt serve`: an HTTP segmentation service (FastAPI + uvicorn) that batches concurrent requests onto the model.

Modules: options (the service's settings), replicas (models loaded per device and warmed up), batching (the
bounded queue and the worker threads that run batches), decoding (request bodies -> images, with size limits),
responses (results -> the json / hf / png bodies), metrics (Prometheus), app (the routes), server (uvicorn,
signals). static/ holds the demo page, served from the package (no CDN).

Above the predictor: imports predictor, outputs/, processing/ and config only; never data/, evaluation/,
training/, jobs/ or cli/. Nothing in the package imports serve/ except cli/, so the core install runs without
its dependencies (`pip install 'eomt[serve]'`: fastapi, uvicorn, python-multipart, prometheus-client).
"""
