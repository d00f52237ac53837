"""Two tasks ask the model the same question once each; an answer that is an error is not
retried: the script plays a fallback action instead, as real scripts do."""

import os

import httpx

url = os.environ["API_BASE_URL"].rstrip("/") + "/chat/completions"
headers = {"authorization": f"Bearer {os.getenv('HF_TOKEN') or 'x'}"}
body = {"model": "m", "messages": [{"role": "user", "content": "what now?"}]}
for task in ("first", "second"):
    print(f"[START] task={task} env=none model=m", flush=True)
    answer = httpx.post(url, json=body, headers=headers, timeout=10)
    action = "asked" if answer.status_code == 200 else "fallback"
    print(f"[STEP] step=1 action={action} reward=0.00 done=true error=null", flush=True)
    print("[END] success=true steps=1 score=0.50 rewards=0.00", flush=True)
