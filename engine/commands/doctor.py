"""`chattune doctor [--json]`: what this machine can do and the setup the app will choose."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="what this machine can do (GPU, bf16, QLoRA, llama.cpp offload)",
                              description="One screen: the torch build and CUDA, the GPUs (memory, compute "
                                          "capability), bf16 on the GPU and CPU, bitsandbytes, the llama.cpp "
                                          "build, the converters, and the training and chat setup chattune "
                                          "will choose, each with its reason.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_doctor)


def run_doctor(args) -> int:
    from engine.doctor import diagnose, render
    from engine.hardware import probe

    report = diagnose(probe())
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0
