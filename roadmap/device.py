"""What `auto` means for the device keys: the accelerator, precision, memory format, cuDNN autotuning and CPU
threads. The measurements behind each default are in results/bench/README.md ("Device defaults")."""
from __future__ import annotations

import torch
from omegaconf import DictConfig

from roadmap.data import usable_cores


def gpu_requested(cfg: DictConfig) -> bool:
    return str(cfg.trainer.accelerator) in ("gpu", "cuda") or (
        cfg.trainer.accelerator == "auto" and torch.cuda.is_available())


def native_bf16_cpu() -> bool:
    """AVX512-BF16 or AMX: CPUs where bf16 autocast is native; elsewhere it is emulated and slower than fp32."""
    return any(getattr(torch.cpu, probe, lambda: False)()
               for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_precision(cfg: DictConfig) -> str:
    """trainer.precision, with auto: bf16-mixed on a GPU or a CPU with native bf16, 32-true elsewhere."""
    if cfg.trainer.precision != "auto":
        return str(cfg.trainer.precision)
    return "bf16-mixed" if gpu_requested(cfg) or native_bf16_cpu() else "32-true"


def resolve_channels_last(cfg: DictConfig) -> bool:
    """trainer.channels_last, with auto: on with a GPU (tensor cores) or with oneDNN on the CPU, whose NHWC
    kernels were faster or even in every case measured; off where neither is available."""
    if cfg.trainer.channels_last != "auto":
        return bool(cfg.trainer.channels_last)
    return gpu_requested(cfg) or torch.backends.mkldnn.is_available()


def resolve_benchmark(cfg: DictConfig) -> bool | None:
    """trainer.benchmark (cuDNN autotuning), with auto: on with a GPU, unless the run must be deterministic."""
    if cfg.trainer.benchmark != "auto":
        return cfg.trainer.benchmark
    return gpu_requested(cfg) and not cfg.trainer.deterministic


def set_cpu_threads(cfg: DictConfig) -> None:
    """On CPU, split the cores among the training processes (torch would give each process all of them)."""
    if gpu_requested(cfg):
        return
    threads = cfg.trainer.cpu_threads
    if threads == "auto":
        procs = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
        threads = max(1, usable_cores() // procs)
    torch.set_num_threads(int(threads))
