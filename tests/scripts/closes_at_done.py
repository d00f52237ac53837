"""Reads each streamed answer up to its data: [DONE] and closes it there, as the openai client
does, without waiting for the end of the body. LEAVE=first: closes after the first event."""

import os

import httpx

leave_first = os.getenv("LEAVE") == "first"
url = os.environ["API_BASE_URL"].rstrip("/") + "/chat/completions"
headers = {"authorization": f"Bearer {os.getenv('HF_TOKEN') or 'x'}"}
print("[START] task=late env=none model=m", flush=True)
for step in (1, 2):
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": f"{step}"}]}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=10) as response:
        for line in response.iter_lines():
            if line == "data: [DONE]" or (leave_first and line.startswith("data: ")):
                break
    print(f"[STEP] step={step} action=a{step} reward=0.00 done=false error=null", flush=True)
print("[END] success=true steps=2 score=0.50 rewards=0.00,0.00", flush=True)
