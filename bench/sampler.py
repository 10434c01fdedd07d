"""A small sampling profiler for the bot process (cProfile slows it down too much).

``python -m bench.sampler OUT.txt -m bot`` runs ``bot`` as ``__main__`` while a thread
samples the main thread's stack every ``SAMPLER_INTERVAL`` seconds (default 0.005). Every
10 s and at exit it writes OUT.txt: the functions most often on top of the stack (self)
and on the stack at all (inclusive), as shares of all samples.
"""

from __future__ import annotations

import atexit
import collections
import os
import runpy
import sys
import threading
import time
from types import FrameType

_TOP = 40
_DUMP_EVERY = 10.0


class Sampler:
    def __init__(self, out: str, interval: float) -> None:
        self._out = out
        self._interval = interval
        self._main = threading.main_thread().ident
        self._self: collections.Counter[str] = collections.Counter()
        self._inclusive: collections.Counter[str] = collections.Counter()
        self._stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
        self._samples = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @staticmethod
    def _name(frame: FrameType) -> str:
        code = frame.f_code
        path = code.co_filename
        for marker in ("site-packages/", "lib/python3.11/", "/bot/"):
            if marker in path:
                path = ("bot/" if marker == "/bot/" else "") + path.split(marker, 1)[1]
                break
        return f"{path}:{code.co_name}"

    def _sample(self) -> None:
        frame = sys._current_frames().get(self._main or 0)
        if frame is None:
            return
        names: list[str] = []
        current: FrameType | None = frame
        while current is not None:
            names.append(self._name(current))
            current = current.f_back
        with self._lock:
            self._samples += 1
            self._self[names[0]] += 1
            for name in set(names):
                self._inclusive[name] += 1
            self._stacks[tuple(names[:6])] += 1

    def run(self) -> None:
        last_dump = time.monotonic()
        while not self._stop.wait(self._interval):
            self._sample()
            if time.monotonic() - last_dump > _DUMP_EVERY:
                self.dump()
                last_dump = time.monotonic()

    def dump(self) -> None:
        with self._lock:
            total = max(1, self._samples)
            lines = [f"samples: {self._samples} every {self._interval * 1000:g} ms", "", "self:"]
            lines += [f"{n / total:7.1%}  {name}" for name, n in self._self.most_common(_TOP)]
            lines += ["", "inclusive:"]
            lines += [f"{n / total:7.1%}  {name}" for name, n in self._inclusive.most_common(_TOP)]
            lines += ["", "stacks (innermost first, 6 deep):"]
            for stack, n in self._stacks.most_common(25):
                lines.append(f"{n / total:7.1%}  " + " <- ".join(stack))
        tmp = self._out + ".tmp"
        with open(tmp, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(tmp, self._out)

    def stop(self) -> None:
        self._stop.set()
        self.dump()


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit("usage: python -m bench.sampler OUT.txt -m MODULE [ARGS...]")
    out, module = sys.argv[1], sys.argv[3]
    sampler = Sampler(out, float(os.environ.get("SAMPLER_INTERVAL", "0.005")))
    thread = threading.Thread(target=sampler.run, name="sampler", daemon=True)
    thread.start()
    atexit.register(sampler.stop)
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
