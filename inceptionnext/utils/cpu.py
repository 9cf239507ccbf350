"""Whether bf16 is worth running on this CPU, from its instruction-set flags.

oneDNN *can* run bf16 on any AVX-512 CPU (``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is true there), but
without bf16 dot-product instructions it converts and runs fp32 arithmetic, slower than fp32. With them it pays
even without AMX: on an AVX512_BF16 Zen 5 (no AMX) OpenVINO bf16 ran 1.7-1.9x its fp32, PyTorch bf16 1.15-1.3x.
So the rule is the flags: ``avx512_bf16`` or ``amx_bf16`` (x86), ``bf16`` (Arm).
"""

from typing import FrozenSet, Optional

__all__ = ["BF16_FLAGS", "cpu_flags", "native_bf16", "bf16_flags_found"]

BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> Optional[FrozenSet[str]]:
    """The first CPU's flags (x86 'flags', Arm 'Features'), or None where the system does not list them.

    Args:
        cpuinfo: the file to read them from.

    Returns:
        The flags, or None when the file is missing or lists none.
    """
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return None


def bf16_flags_found(cpuinfo: str = "/proc/cpuinfo") -> tuple:
    """The native-bf16 flags this CPU lists (empty: none, or the flags are unknown).

    Args:
        cpuinfo: the file to read the flags from.

    Returns:
        Those of `BF16_FLAGS` the CPU lists.
    """
    flags = cpu_flags(cpuinfo) or frozenset()
    return tuple(f for f in BF16_FLAGS if f in flags)


def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has bf16 dot-product instructions, so bf16 inference runs faster than fp32.

    Args:
        cpuinfo: the file to read the flags from.

    Returns:
        True when it lists one of `BF16_FLAGS`.
    """
    return bool(bf16_flags_found(cpuinfo))
