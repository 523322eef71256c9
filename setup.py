from setuptools import find_packages, setup

setup(
    name="megajepa",
    version="0.1.0",
    description="Distributed pretraining for LLM-JEPA (next-token + JEPA objective) on DeepSpeed ZeRO-3",
    packages=find_packages(include=["megajepa", "megajepa.*"]),
    python_requires=">=3.11",
    install_requires=[
        "torch>=2.13",  # F.linear_cross_entropy is the NTP loss
        "deepspeed>=0.19.8,<0.20",  # internal APIs: ops.__compatible_ops__, ds_to_universal.main, is_decoupled
        "transformers>=5.23,<6",  # the slow-tokenizer converter
        "datasets>=4.0",
        "sentencepiece>=0.2",
        "tensorboard>=2.17",
        "safetensors>=0.4",
        "pyyaml>=6",
        "numpy>=1.26",
    ],
    extras_require={
        # lm-eval's [hf] extra: accelerate (and peft), which `lm_eval --model hf` imports (tests/test_lm_eval_tasks.py)
        "test": ["pytest>=8", "pytest-timeout>=2.3", "lm-eval[hf]>=0.4.13,<0.5"],
        "wandb": ["wandb>=0.31"],
        "plots": ["matplotlib>=3.8", "scipy>=1.11"],  # the run report, megajepa-analyze, the studies (scipy: their t-test)
        # mpirun launches without a site MPI; a cluster keeps its own (install mpi4py against it instead)
        "mpi": ["mpi4py>=4.0", "mpich>=4.0; platform_system == 'Linux'"],
    },
    entry_points={"console_scripts": [
        "megajepa-train=megajepa.train:run_and_exit",  # exits without finalization (distributed.exit_process)
        "megajepa-convert-to-hf=megajepa.cli.convert_to_hf:main",
        "megajepa-convert-from-hf=megajepa.cli.convert_from_hf:run_and_exit",
        "megajepa-preprocess=megajepa.cli.preprocess:main",
        "megajepa-evaluate=megajepa.cli.evaluate:main",
        "megajepa-generate-data=megajepa.cli.generate_data:main",
        "megajepa-train-tokenizer=megajepa.cli.train_tokenizer:main",
        "megajepa-analyze=megajepa.cli.analyze:main",
        "megajepa-report=megajepa.training.logs.report:main",
    ]},
)
