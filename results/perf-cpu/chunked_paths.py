"""Forward+backward time of the chunked PyTorch path on this CPU: all chunks at once vs the chunk loop.

    .venv/bin/python results/perf-cpu/chunked_paths.py > results/perf-cpu/chunked_paths.txt

SmolLM2 heads (9 q / 3 kv, D 64, F 128), fp32, 2 threads, mean of 3 after 1 warm-up. A carried (zero) state
forces the loop; without one, sequences of >= PARALLEL_MIN_CHUNKS chunks take the path without a loop.
"""

import time

import torch

from lolsearch.attention import chunked

torch.manual_seed(0)
torch.set_num_threads(2)


def seconds(b: int, t: int, window: int, layout: str, loop: bool) -> float:
    h, hkv, d, f = 9, 3, 64, 128
    xs = [torch.randn(b, h, t, d), torch.randn(b, hkv, t, d), torch.randn(b, hkv, t, d), torch.rand(b, h, t, f),
          torch.rand(b, h, t, f), torch.full((h,), 0.1)]
    xs = [x.requires_grad_() for x in xs]
    state = chunked.LinearState.zeros(b, h, f, d) if loop else None

    def step() -> None:
        chunked.hybrid_attention_chunked(*xs, window, layout, state=state).sum().backward()

    step()
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    return (time.perf_counter() - t0) / 3


print("batch  T     window  chunks  loop_s  at_once_s  speedup")  # noqa: T201
for b, t, w in [(8, 128, 16), (4, 512, 64), (2, 1024, 64), (1, 4096, 64)]:
    loop, fast = seconds(b, t, w, "sliding", True), seconds(b, t, w, "sliding", False)
    print(f"{b:<6} {t:<5} {w:<7} {t // 64:<7} {loop:<7.3f} {fast:<10.3f} {loop / fast:.2f}x")  # noqa: T201
