"""`captioner serve`: a local web demo and JSON API over the one captioning loop.

An optional extra (`pip install 'captioner[serve]'`: Starlette, uvicorn, python-multipart).
Only the CLI imports this package, lazily, and it imports neither the API nor the CLI
(tests/test_layout.py): the model comes in as a `captioner.captioning.Captioner`.

- `app.create_app`: the ASGI app (page, API, result files, errors as JSON);
- `batching.Batcher`: dynamic batching in one model thread;
- `results.ResultStore`: recent results for the page's attention view and downloads;
- `server.run_server`: uvicorn on one socket, with graceful shutdown.
"""
