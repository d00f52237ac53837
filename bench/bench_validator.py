"""Benchmark ``validator check``: lines/s and peak memory on a large valid log, against
``grep -c`` on the same file, and the time to reject one hostile 20 MB line.

    python bench/bench_validator.py [--lines 1000000]

Not a test: machines are noisy, so it prints ratios to ``grep -c`` measured in the same run.
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ACTIONS = ["move(north)", "click('#submit')", "say('reward=5.00 done=true')",
           '{"action_type": "triage", "priority": 2}', "update_belief(auth_expiry=0.16,risk=0.4)"]


def write_log(path: Path, lines: int, seed: int = 0) -> int:
    """Write a valid log of about ``lines`` lines (whole episodes); return its line count."""
    rng = random.Random(seed)
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        episode = 0
        while written < lines:
            episode += 1
            steps = min(rng.randint(5, 60), max(lines - written - 2, 1))
            out = [f"[START] task=task-{episode % 7} env=bench-env model=Qwen/Qwen2.5-72B-Instruct"]
            rewards = []
            for n in range(1, steps + 1):
                reward = f"{rng.uniform(-1, 1):.2f}"
                rewards.append(reward)
                done = "true" if n == steps else "false"
                error = "null" if rng.random() < 0.9 else "HTTP 429: rate limited, retry in 2s"
                out.append(f"[STEP] step={n} action={rng.choice(ACTIONS)} reward={reward} "
                           f"done={done} error={error}")
            out.append(f"[END] success=true steps={steps} score={rng.random():.3f} "
                       f"rewards={','.join(rewards)}")
            f.write("\n".join(out) + "\n")
            written += len(out)
    return written


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--hostile-mb", type=int, default=20)
    args = parser.parse_args()
    validator = [sys.executable, "-m", "validator.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "valid.log"
        lines = write_log(log, args.lines)
        size = log.stat().st_size
        grep_s, _ = timed(["grep", "-c", "", str(log)])
        wc_s, _ = timed(["wc", "-l", str(log)])
        check_s, done = timed(validator + ["check", str(log)])
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        startup_s, _ = timed(validator + ["--help"])
        print(f"log: {lines:,} lines, {size / 1e6:.1f} MB (valid; {done.stdout.strip()})")
        print(f"validator check: {check_s:.2f} s = {lines / check_s:,.0f} lines/s "
              f"({size / check_s / 1e6:.0f} MB/s); peak RSS {peak_mb:.0f} MB")
        print(f"grep -c '': {grep_s:.3f} s; validator check is {check_s / grep_s:.1f}x grep -c")
        print(f"wc -l: {wc_s:.3f} s; validator --help: {startup_s:.2f} s")

        hostile = Path(tmp) / "hostile.log"
        unit = b"reward= reward=0.5 done= error= =="
        body = unit * (args.hostile_mb * 1024 * 1024 // len(unit))
        hostile.write_bytes(b"[START] task=t env=e model=m\n[STEP] step=1 action=" + body
                            + b" reward=0.5 done=true\n")
        hostile_s, done = timed(validator + ["check", str(hostile)])
        first = done.stdout.splitlines()[0][:120] if done.stdout else done.stderr[:200]
        print(f"hostile {args.hostile_mb} MB line: rejected in {hostile_s:.2f} s "
              f"(exit {done.returncode}): {first}")


if __name__ == "__main__":
    main()
