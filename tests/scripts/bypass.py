"""Ignores API_BASE_URL: without its own key variable it silently plays a heuristic."""

import os

if os.getenv("GROQ_API_KEY"):
    raise SystemExit("this test never sets GROQ_API_KEY")
for task in ("h1", "h2", "h3"):
    print(f"[START] task={task} env=demo model=heuristic", flush=True)
    print("[STEP] step=1 action=noop reward=0.50 done=true error=null", flush=True)
    print("[END] success=true steps=1 score=0.50 rewards=0.50", flush=True)
