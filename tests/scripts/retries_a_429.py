"""Asks for a stream and, when the answer is a 429, closes it unread and asks again, as the
openai client does before a retry."""

import os

import httpx

url = os.environ["API_BASE_URL"].rstrip("/") + "/chat/completions"
headers = {"authorization": f"Bearer {os.getenv('HF_TOKEN') or 'x'}"}
print("[START] task=busy env=none model=m", flush=True)
for step in (1, 2):
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": f"{step}"}]}
    while True:
        with httpx.stream("POST", url, json=body, headers=headers, timeout=10) as response:
            if response.status_code == 429:
                continue  # the answer is closed unread
            for _ in response.iter_lines():
                pass
            break
    print(f"[STEP] step={step} action=a{step} reward=0.00 done=false error=null", flush=True)
print("[END] success=true steps=2 score=0.50 rewards=0.00,0.00", flush=True)
