"""Make a CUDA-built torchvision import beside a CPU torch (run by dev/vllm-venv, in that venv).

torchvision registers most of its fake kernels only when its C ops loaded (``register_meta``
checks ``extension._has_ops()``), but ``nms`` and ``qnms`` use ``torch.library.register_fake``
directly, which fails when the op does not exist. This gives those two the same guard. The
patch is idempotent, touches nothing when the C ops load, and checks the import afterwards.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

OLD = '@torch.library.register_fake("torchvision::'
NEW = '@_register_fake_if_ops("torchvision::'
HELPER = '''
def _register_fake_if_ops(name):  # added by pixscribe's dev/vllm-venv: no C ops, no fake kernel
    if torchvision.extension._has_ops():
        return torch.library.register_fake(name)
    return lambda fn: fn

'''


def imports() -> subprocess.CompletedProcess:
    code = "import torchvision.transforms.v2.functional, torchvision.extension as e; print(e._has_ops())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def main() -> int:
    first = imports()
    if first.returncode == 0:
        print(f"dev/vllm-venv: torchvision imports (C ops loaded: {first.stdout.strip()})", file=sys.stderr)
        return 0
    if "torchvision::" not in first.stderr:
        print(first.stderr, file=sys.stderr)
        return 1
    spec = importlib.util.find_spec("torchvision")
    path = Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    if NEW not in text:
        if text.count(OLD) != 2 or "\n@functools.lru_cache(None)\ndef get_meta_lib" not in text:
            print(f"{path}: not the layout this patch knows (torchvision changed?)", file=sys.stderr)
            return 1
        text = text.replace(OLD, NEW).replace(
            "\n@functools.lru_cache(None)\ndef get_meta_lib", HELPER + "\n@functools.lru_cache(None)\ndef get_meta_lib", 1
        )
        path.write_text(text)
        for pyc in (path.parent / "__pycache__").glob("_meta_registrations.*.pyc"):
            pyc.unlink()
    after = imports()
    if after.returncode != 0:
        print(after.stderr, file=sys.stderr)
        return 1
    print(f"dev/vllm-venv: torchvision's nms/qnms fakes guarded in {path} (C ops loaded: {after.stdout.strip()})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
