"""`flora-eval serve`: an OpenAI-compatible server over the generation engine, many adapters
in one batch.

    cli.py        the command's arguments; loads the model and adapters, runs uvicorn
    server.py     assembles model, adapters, engine, scheduler and app; a server in a thread
    app.py        the HTTP API (FastAPI): /v1/completions, /v1/chat/completions, /v1/models, /health,
                  /telemetry
    scheduler.py  the thread that owns the engine: batched prefill, continuous batching
    engine_process.py  the engine in its own process; its death or stall seen at once
    supervisor.py the engine process's keeper: restarts a dead one (bounded), reports health
"""
